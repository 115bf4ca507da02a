import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../helpers/clock.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { provision, signup } from '../helpers/journey.js';
import { DIALECTS } from '../helpers/postgres.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

const PASSWORD = 'a long and plain passphrase';

describe.each(DIALECTS)('POST /auth/signup (%s)', (dialect) => {
  let gw: TestGateway;
  let smtp: SmtpCapture;
  const clock = new ManualClock();
  let n = 0;
  // each test signs up from its own address, so the per-IP limits of one test do not spill into the next
  let ip = '';
  const email = (prefix: string) => `${prefix}-${dialect}-${++n}@example.com`;
  const attempt = (body: Record<string, unknown>) => signup(gw, body, { 'x-forwarded-for': ip });

  beforeAll(async () => {
    smtp = await startSmtpCapture();
    gw = await startTestGateway({
      dialect,
      clock,
      env: { SMTP_URL: smtp.url, TRUST_PROXY: 'true', APP_NAME: 'Acme Health' },
    });
  });
  afterAll(async () => {
    await gw.close();
    await smtp.close();
  });
  beforeEach(() => {
    ip = `198.51.100.${++n % 250}`;
  });

  const userRow = (address: string) =>
    gw.deps.db.selectFrom('users').selectAll().where('email', '=', address).executeTakeFirstOrThrow();

  it('activates the account with the emailed code and returns a token with the role and FHIR id', async () => {
    const person = await provision(gw, smtp, email('ann'));
    const response = await attempt({
      email: person.email,
      access_code: person.code,
      password: PASSWORD,
      profile: { display_name: 'Ann', preferred_language: 'en' },
    });
    expect(response.status).toBe(201);
    const body = (await response.json()) as {
      token: string;
      refresh_token: string;
      user: Record<string, unknown>;
      token_type: string;
    };
    expect(body.token_type).toBe('Bearer');
    expect(body.refresh_token).toMatch(/^rt_/);
    expect(body.user).toEqual({
      id: person.userId,
      email: person.email,
      role: 'patient',
      fhir_id: person.fhirId,
      is_registered: true,
      profile: { display_name: 'Ann', preferred_language: 'en' },
    });
    const claims = JSON.parse(Buffer.from(body.token.split('.')[1]!, 'base64url').toString());
    expect(claims).toMatchObject({
      sub: person.userId,
      role: 'patient',
      fhir_id: person.fhirId,
      fhirUser: `Patient/${person.fhirId}`,
    });
    const row = await userRow(person.email);
    expect(row).toMatchObject({ is_registered: 1, access_code_hash: null, access_code_expires_at: null });
    expect(row.registered_at).not.toBeNull();
    expect(row.password_hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    const audit = await gw.deps.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'auth.signup')
      .where('outcome', '=', 'success')
      .execute();
    expect(audit.some((a) => a.target_user_id === person.userId)).toBe(true);

    const reuse = await attempt({ email: person.email, access_code: person.code, password: PASSWORD });
    expect(reuse.status).toBe(400);
    const login = await gw.call('/auth/login', {
      method: 'POST',
      json: { email: person.email, password: PASSWORD },
    });
    expect(login.status).toBe(200);
    expect(((await login.json()) as { user: { fhir_id: string } }).user.fhir_id).toBe(person.fhirId);
  });

  it('signs a practitioner up with their role and FHIR id', async () => {
    const person = await provision(gw, smtp, email('dr'), 'practitioner');
    const response = await attempt({
      email: person.email,
      access_code: person.code.toLowerCase().replaceAll('-', ' '),
      password: PASSWORD,
    });
    expect(response.status).toBe(201);
    const body = (await response.json()) as { user: { role: string; fhir_id: string } };
    expect(body.user).toMatchObject({ role: 'practitioner', fhir_id: person.fhirId });
  });

  it('lets exactly one of 20 concurrent signups with one code succeed', async () => {
    const person = await provision(gw, smtp, email('race'));
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        attempt({ email: person.email, access_code: person.code, password: `${PASSWORD} number ${i}` }),
      ),
    );
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    expect(statuses.every((s) => s === 201 || s === 400 || s === 429)).toBe(true);
    // every loser is a wrong try at that account in the trail, also one that lost at the commit
    const refused = answers.filter((r) => r.status === 400).map((r) => r.headers.get('x-request-id') ?? '');
    const trail = await gw.deps.db
      .selectFrom('audit_log')
      .select(['outcome', 'actor_user_id', 'actor_role', 'error_code'])
      .where('action', '=', 'auth.signup')
      .where('request_id', 'in', refused)
      .execute();
    expect(trail).toHaveLength(refused.length);
    for (const entry of trail)
      expect(entry).toEqual({
        outcome: 'failed',
        actor_user_id: person.userId,
        actor_role: 'patient',
        error_code: 'invalid_access_code',
      });
    const winner = answers.findIndex((r) => r.status === 201);
    const row = await userRow(person.email);
    expect(row.is_registered).toBe(1);
    const sessions = await gw.deps.db
      .selectFrom('sessions')
      .selectAll()
      .where('user_id', '=', person.userId)
      .execute();
    expect(sessions).toHaveLength(1);
    const login = (password: string) =>
      gw.call('/auth/login', { method: 'POST', json: { email: person.email, password } });
    expect((await login(`${PASSWORD} number ${winner}`)).status).toBe(200);
    expect((await login(`${PASSWORD} number ${(winner + 1) % 20}`)).status).toBe(401);
  });

  it('refuses an expired code', async () => {
    const person = await provision(gw, smtp, email('late'));
    clock.advance(24 * 3600_000 + 1000);
    try {
      expect(
        (await attempt({ email: person.email, access_code: person.code, password: PASSWORD })).status,
      ).toBe(400);
    } finally {
      clock.advance(-(24 * 3600_000 + 1000));
    }
    expect((await userRow(person.email)).is_registered).toBe(0);
  });

  it('voids the code after 5 wrong tries, so the right code then fails too', async () => {
    const person = await provision(gw, smtp, email('guess'));
    for (let i = 0; i < 5; i++) {
      expect(
        (await attempt({ email: person.email, access_code: 'AAAA-AAAA-AAAA-AAAA', password: PASSWORD }))
          .status,
      ).toBe(400);
    }
    expect((await userRow(person.email)).access_code_attempts).toBe(5);
    expect(
      (await attempt({ email: person.email, access_code: person.code, password: PASSWORD })).status,
    ).toBe(400);
    expect((await userRow(person.email)).is_registered).toBe(0);
  });

  it("does not accept one person's code for another email", async () => {
    const a = await provision(gw, smtp, email('a'));
    const b = await provision(gw, smtp, email('b'));
    expect((await attempt({ email: b.email, access_code: a.code, password: PASSWORD })).status).toBe(400);
    expect((await userRow(b.email)).is_registered).toBe(0);
  });

  it('answers unknown email, wrong code, expired, used and registered with byte-identical bodies', async () => {
    const wrong = await provision(gw, smtp, email('wrong'));
    const expired = await provision(gw, smtp, email('expired'));
    const used = await provision(gw, smtp, email('used'));
    expect((await attempt({ email: used.email, access_code: used.code, password: PASSWORD })).status).toBe(
      201,
    );
    await gw.deps.db
      .updateTable('users')
      .set({ access_code_expires_at: new Date(0).toISOString() })
      .where('id', '=', expired.userId)
      .execute();
    const admin = 'admin@example.com';
    const cases = [
      { email: 'nobody-at-all@example.com', access_code: wrong.code },
      { email: wrong.email, access_code: 'ZZZZ-ZZZZ-ZZZZ-ZZZZ' },
      { email: expired.email, access_code: expired.code },
      { email: used.email, access_code: used.code },
      { email: admin, access_code: wrong.code },
    ];
    const answers = [];
    for (const c of cases) answers.push(await attempt({ ...c, password: PASSWORD }));
    const bodies = await Promise.all(answers.map((r) => r.text()));
    expect(answers.map((r) => r.status)).toEqual([400, 400, 400, 400, 400]);
    expect(new Set(bodies).size).toBe(1);
    expect(JSON.parse(bodies[0]!)).toMatchObject({ code: 'invalid_access_code', status: 400 });
  });

  it.each([
    ['role', { role: 'admin' }],
    ['fhir_id', { fhir_id: 'someone-else' }],
    ['is_registered', { is_registered: true }],
    ['an unknown field', { favourite_colour: 'blue' }],
    ['an unknown profile field', { profile: { role: 'admin' } }],
  ])('refuses %s in the body with 400 and leaves the account unchanged', async (_label, extra) => {
    const person = await provision(gw, smtp, email('mass'));
    const before = await userRow(person.email);
    const response = await attempt({
      email: person.email,
      access_code: person.code,
      password: PASSWORD,
      ...extra,
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ code: 'validation_failed' });
    expect(await userRow(person.email)).toEqual(before);
  });

  it.each([
    ['too short', 'short words', /at least 15 characters/],
    ['too long', 'x'.repeat(129), /at most 128/],
    ['common', 'passwordpassword', /too common/],
    ['the email', '', /email address/],
    ['the app name', 'Acme Health Acme Health', /name of this service/],
  ])('refuses a password that is %s, saying why', async (_label, password, reason) => {
    const person = await provision(gw, smtp, email('policy'));
    const chosen = password || `${person.email}`;
    const response = await attempt({ email: person.email, access_code: person.code, password: chosen });
    expect(response.status).toBe(400);
    const body = (await response.json()) as { errors: { path: string; message: string }[] };
    expect(body.errors[0]).toMatchObject({ path: 'password', message: expect.stringMatching(reason) });
    expect((await userRow(person.email)).is_registered).toBe(0);
  });

  // a password's length is its code points after NFKC, at signup, reset and login alike
  it.each([
    // 114 characters, 214 UTF-16 units
    ['astral characters', `correct horse ${'🍎'.repeat(100)}`],
    // 65 characters as typed, 82 after NFKC (U+FDFA expands to 18), 132 UTF-16 units after NFKC
    ['a character NFKC expands', `correct horse ${'🍎'.repeat(50)}\uFDFA`],
    ['exactly 128 characters', `correct horse ${'🍎'.repeat(114)}`],
  ])('logs in with a password of %s that signup accepted', async (_label, password) => {
    const person = await provision(gw, smtp, email('length'));
    expect((await attempt({ email: person.email, access_code: person.code, password })).status).toBe(201);
    const login = await gw.call('/auth/login', { method: 'POST', json: { email: person.email, password } });
    expect(login.status).toBe(200);
  });

  it('refuses 129 characters counted after NFKC, at signup and at login alike', async () => {
    const person = await provision(gw, smtp, email('length'));
    for (const password of [`correct horse ${'🍎'.repeat(115)}`, `correct horse ${'\uFDFA'.repeat(7)}`]) {
      const response = await attempt({ email: person.email, access_code: person.code, password });
      expect(response.status).toBe(400);
      const body = (await response.json()) as { errors: { path: string; message: string }[] };
      expect(body.errors[0]).toMatchObject({
        path: 'password',
        message: expect.stringMatching(/at most 128/),
      });
      const login = await gw.call('/auth/login', { method: 'POST', json: { email: person.email, password } });
      expect(login.status).toBe(400);
    }
  });

  it('accepts a long plain passphrase in any script, NFKC-normalised', async () => {
    const person = await provision(gw, smtp, email('unicode'));
    const password = 'ｃａｆé au lait sous la pluie ☔ 東京';
    expect((await attempt({ email: person.email, access_code: person.code, password })).status).toBe(201);
    const nfkc = password.normalize('NFKC');
    const login = await gw.call('/auth/login', {
      method: 'POST',
      json: { email: person.email, password: nfkc },
    });
    expect(login.status).toBe(200);
    const decomposed = password.normalize('NFD');
    expect(
      (await gw.call('/auth/login', { method: 'POST', json: { email: person.email, password: decomposed } }))
        .status,
    ).toBe(200);
  });
});
