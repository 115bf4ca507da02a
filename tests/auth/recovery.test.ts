import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fulfilLapsedCodeRequests, recordCodeRequest } from '../../src/auth/codeRequests.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { codeIn, mailsTo, provision, signup } from '../helpers/journey.js';
import { DIALECTS } from '../helpers/postgres.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

const PASSWORD = 'a long and plain passphrase';
const NEW_PASSWORD = 'an entirely different passphrase';

describe.each(DIALECTS)('resend, forgot and reset (%s)', (dialect) => {
  let gw: TestGateway;
  let smtp: SmtpCapture;
  let n = 0;
  const email = (prefix: string) => `${prefix}-${dialect}-${++n}@example.com`;

  beforeAll(async () => {
    smtp = await startSmtpCapture();
    gw = await startTestGateway({ dialect, env: { SMTP_URL: smtp.url, TRUST_PROXY: 'true' } });
  });
  afterAll(async () => {
    await gw.close();
    await smtp.close();
  });

  const post = (path: string, json: unknown) =>
    gw.call(path, { method: 'POST', json, headers: { 'x-forwarded-for': `203.0.113.${++n % 250}` } });

  async function settle() {
    await gw.deps.background.drain();
    gw.deps.outbox.wake();
    await new Promise((r) => setTimeout(r, 300));
  }

  it('resend gives a pending account a fresh code and voids the old one', async () => {
    const person = await provision(gw, smtp, email('resend'));
    const response = await post('/auth/access-code/resend', { email: person.email.toUpperCase() });
    expect(response.status).toBe(202);
    const [, second] = await mailsTo(smtp, person.email, 2);
    const fresh = codeIn(second!);
    expect(fresh).not.toBe(person.code);
    expect(
      (await signup(gw, { email: person.email, access_code: person.code, password: PASSWORD })).status,
    ).toBe(400);
    expect((await signup(gw, { email: person.email, access_code: fresh, password: PASSWORD })).status).toBe(
      201,
    );
  });

  it('a password change voids a reset code mailed before it', async () => {
    const person = await provision(gw, smtp, email('change-voids'));
    const signedUp = await signup(gw, { email: person.email, access_code: person.code, password: PASSWORD });
    const { token } = (await signedUp.json()) as { token: string };
    expect((await post('/auth/password/forgot', { email: person.email })).status).toBe(202);
    const code = codeIn((await mailsTo(smtp, person.email, 2))[1]!);
    const change = await gw.call('/auth/password/change', {
      method: 'POST',
      token,
      json: { current_password: PASSWORD, new_password: NEW_PASSWORD },
    });
    expect(change.status).toBe(200);
    // a leaked reset mail must not outlive the password it was sent to replace
    const reset = await post('/auth/password/reset', {
      email: person.email,
      code,
      new_password: 'a third passphrase of its own',
    });
    expect(reset.status).toBe(400);
    expect((await post('/auth/login', { email: person.email, password: NEW_PASSWORD })).status).toBe(200);
  });

  it('forgot and resend answer 202 for unknown and registered emails alike and send nothing', async () => {
    const before = smtp.messages.length;
    const unknown = 'nobody-here@example.com';
    const bodies = [];
    for (const path of ['/auth/access-code/resend', '/auth/password/forgot']) {
      const response = await post(path, { email: unknown });
      expect(response.status).toBe(202);
      bodies.push(await response.json());
    }
    const registered = await gw.seedUser({ role: 'patient' });
    expect((await post('/auth/access-code/resend', { email: registered.email })).status).toBe(202);
    await settle();
    expect(smtp.messages.length).toBe(before);
    expect(bodies[0]).toEqual({ message: expect.any(String) });
  });

  it('reset with the mailed code sets the new password and ends every existing session', async () => {
    const person = await provision(gw, smtp, email('reset'));
    const signedUp = (await (
      await signup(gw, { email: person.email, access_code: person.code, password: PASSWORD })
    ).json()) as {
      token: string;
      refresh_token: string;
    };
    expect((await post('/auth/password/forgot', { email: person.email })).status).toBe(202);
    const mails = await mailsTo(smtp, person.email, 2);
    const resetMail = mails[1]!;
    expect(resetMail.subject).toMatch(/password reset/i);
    const code = codeIn(resetMail);

    expect(
      (
        await post('/auth/password/reset', {
          email: person.email,
          code: 'AAAA-AAAA-AAAA-AAAA',
          new_password: NEW_PASSWORD,
        })
      ).status,
    ).toBe(400);
    const response = await post('/auth/password/reset', {
      email: person.email,
      code,
      new_password: NEW_PASSWORD,
    });
    expect(response.status).toBe(200);
    expect((await gw.call('/auth/me', { token: signedUp.token })).status).toBe(401);
    expect(
      (await gw.call('/auth/refresh', { method: 'POST', json: { refresh_token: signedUp.refresh_token } }))
        .status,
    ).toBe(401);
    const login = (password: string) =>
      gw.call('/auth/login', { method: 'POST', json: { email: person.email, password } });
    expect((await login(PASSWORD)).status).toBe(401);
    expect((await login(NEW_PASSWORD)).status).toBe(200);
    expect(
      (
        await post('/auth/password/reset', {
          email: person.email,
          code,
          new_password: `${NEW_PASSWORD} again`,
        })
      ).status,
    ).toBe(400);
    const audit = await gw.deps.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'auth.password_reset')
      .where('outcome', '=', 'success')
      .execute();
    expect(audit.some((a) => a.target_user_id === person.userId)).toBe(true);
  });

  it('a password a reset accepts is one the login accepts (its length counted after NFKC)', async () => {
    const person = await provision(gw, smtp, email('reset-length'));
    await signup(gw, { email: person.email, access_code: person.code, password: PASSWORD });
    expect((await post('/auth/password/forgot', { email: person.email })).status).toBe(202);
    const code = codeIn((await mailsTo(smtp, person.email, 2))[1]!);
    // 65 characters as typed, 82 after NFKC (U+FDFA expands to 18), 132 UTF-16 units after NFKC
    const password = `correct horse ${'🍎'.repeat(50)}\uFDFA`;
    const reset = await post('/auth/password/reset', { email: person.email, code, new_password: password });
    expect(reset.status).toBe(200);
    expect((await post('/auth/login', { email: person.email, password })).status).toBe(200);
  });

  it('a reset refuses a weak new password with the reason', async () => {
    const response = await post('/auth/password/reset', {
      email: 'x@example.com',
      code: 'AAAA-AAAA-AAAA-AAAA',
      new_password: 'short',
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({
      errors: [{ path: 'new_password', message: expect.stringMatching(/at least/) }],
    });
  });
  it('lets one of several concurrent resets with one code succeed, each other audited as a wrong try at that account', async () => {
    const person = await provision(gw, smtp, email('reset-race'));
    await signup(gw, { email: person.email, access_code: person.code, password: PASSWORD });
    expect((await post('/auth/password/forgot', { email: person.email })).status).toBe(202);
    const code = codeIn((await mailsTo(smtp, person.email, 2))[1]!);
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        post('/auth/password/reset', { email: person.email, code, new_password: `${NEW_PASSWORD} ${i}` }),
      ),
    );
    expect(answers.filter((r) => r.status === 200)).toHaveLength(1);
    const refused = answers.filter((r) => r.status === 400).map((r) => r.headers.get('x-request-id') ?? '');
    expect(refused.length).toBeGreaterThan(0);
    const trail = await gw.deps.db
      .selectFrom('audit_log')
      .select(['outcome', 'actor_user_id', 'target_user_id'])
      .where('action', '=', 'auth.password_reset')
      .where('request_id', 'in', refused)
      .execute();
    expect(trail).toHaveLength(refused.length);
    for (const entry of trail)
      expect(entry).toEqual({
        outcome: 'failed',
        actor_user_id: person.userId,
        target_user_id: person.userId,
      });
  });

  // its lease run out, as a process killed long enough ago leaves it
  const lapse = (address: string) =>
    gw.deps.db
      .updateTable('code_requests')
      .set({ lease_until: '2000-01-01T00:00:00.000Z' })
      .where('email', '=', address)
      .execute();
  const codeRequestsOf = (address: string) =>
    gw.deps.db.selectFrom('code_requests').select('id').where('email', '=', address).execute();

  it('closes a request once its code is queued, and leaves no record of an unknown email', async () => {
    const person = await provision(gw, smtp, email('closed'));
    expect((await post('/auth/access-code/resend', { email: person.email })).status).toBe(202);
    expect((await post('/auth/password/forgot', { email: email('nobody') })).status).toBe(202);
    await settle();
    await mailsTo(smtp, person.email, 2);
    expect(await gw.deps.db.selectFrom('code_requests').select('id').execute()).toEqual([]);
  });

  it('mails the code of a request its process never fulfilled (killed after the 202), once, when its lease lapses', async () => {
    const person = await provision(gw, smtp, email('killed'));
    // what a process killed between its 202 and the commit that queues the mail leaves behind
    await recordCodeRequest(gw.deps, 'signup', person.email, {
      requestId: 'req-killed',
      clientIp: '203.0.113.7',
    });
    expect(await fulfilLapsedCodeRequests(gw.deps)).toBe(0);
    await lapse(person.email);
    expect(await fulfilLapsedCodeRequests(gw.deps)).toBe(1);
    gw.deps.outbox.wake();
    const [, resent] = await mailsTo(smtp, person.email, 2);
    expect(codeIn(resent!)).not.toBe(person.code);
    expect(await codeRequestsOf(person.email)).toEqual([]);
    expect(await fulfilLapsedCodeRequests(gw.deps)).toBe(0);
    const audited = await gw.deps.db
      .selectFrom('audit_log')
      .select(['outcome', 'client_ip', 'target_user_id'])
      .where('action', '=', 'auth.access_code_resend')
      .where('request_id', '=', 'req-killed')
      .execute();
    expect(audited).toEqual([
      { outcome: 'success', client_ip: '203.0.113.7', target_user_id: person.userId },
    ]);
    await new Promise((r) => setTimeout(r, 300));
    expect(smtp.messages.filter((m) => JSON.stringify(m.to ?? '').includes(person.email))).toHaveLength(2);
  });

  it('closes a lapsed request of an account no longer eligible without mailing it', async () => {
    const person = await provision(gw, smtp, email('ineligible'));
    await recordCodeRequest(gw.deps, 'password_reset', person.email, { requestId: 'req-x', clientIp: null });
    await lapse(person.email);
    expect(await fulfilLapsedCodeRequests(gw.deps)).toBe(1);
    expect(await codeRequestsOf(person.email)).toEqual([]);
    await new Promise((r) => setTimeout(r, 300));
    expect(smtp.messages.filter((m) => JSON.stringify(m.to ?? '').includes(person.email))).toHaveLength(1);
  });
});
