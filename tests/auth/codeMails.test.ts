import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unusedPort } from '../helpers/fakeUpstream.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { codeIn, mailsTo } from '../helpers/journey.js';
import { waitFor } from '../helpers/processes.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * A code voided while its mail still waited for a retry is never mailed: with the SMTP server
 * down, the first mail fails and waits; a re-issue (the admin's, or the person's resend) voids
 * that code and queues a new mail. When the server comes back, only the live code goes out, so
 * the newest mail always holds a code that works.
 */

const PASSWORD = 'a long and plain passphrase';

/** The gateway's code mails in the outbox: where each stands. */
const codeMailRows = (gw: TestGateway) =>
  gw.deps.db
    .selectFrom('outbox')
    .select(['status', 'attempts', 'last_error'])
    .where('kind', '=', 'email')
    .execute();
const METRICS = 'metrics-token-long-enough-for-the-check-0123456789';

describe('a code re-issued while its first mail waits for the SMTP server', () => {
  let gw: TestGateway;
  let smtp: SmtpCapture | undefined;
  let port: number;
  let admin: string;

  beforeAll(async () => {
    port = await unusedPort();
    gw = await startTestGateway({ env: { SMTP_URL: `smtp://127.0.0.1:${port}`, METRICS_TOKEN: METRICS } });
    admin = await gw.adminToken();
  });
  afterAll(async () => {
    await gw?.close();
    await smtp?.close();
  });

  const mailRows = () => codeMailRows(gw);

  it('mails only the live code, and the voided one is marked superseded', async () => {
    const email = 'ann.stale@example.com';
    const created = await gw.call('/fhir/patient', {
      method: 'POST',
      token: admin,
      json: { name: 'Ann Lee', email, dob: '1980-04-12' },
    });
    expect(created.status).toBe(201);
    const { user_id } = (await created.json()) as { user_id: string };
    await waitFor('the first mail to fail', async () => (await mailRows()).some((r) => r.attempts >= 1));
    // "no mail came": the admin re-issues, which voids the first code
    const reissued = await gw.call(`/admin/users/${user_id}/access-code`, { method: 'POST', token: admin });
    expect(reissued.status).toBe(202);
    smtp = await startSmtpCapture({ port });
    const [mail] = await mailsTo(smtp, email, 1, 20_000);
    await waitFor(
      'the voided code to be given up',
      async () => (await mailRows()).some((r) => r.status === 'failed' && r.last_error === 'superseded'),
      20_000,
    );
    expect(smtp.messages.filter((m) => JSON.stringify(m.to).includes(email))).toHaveLength(1);
    const signup = await gw.call('/auth/signup', {
      method: 'POST',
      json: { email, access_code: codeIn(mail!), password: PASSWORD },
    });
    expect(signup.status).toBe(201);
    // a code voided on purpose is no failure to tell the admin about, nor to count as one
    const audit = await gw.call('/admin/audit?action=mail.failed', { token: admin });
    expect(((await audit.json()) as { entries: unknown[] }).entries).toEqual([]);
    const metrics = await (await gw.call('/metrics', { token: METRICS })).text();
    expect(metrics).toMatch(/^fhir_facade_outbox_failures_total\{lane="email",outcome="retry"\} [1-9]/m);
    expect(metrics).toMatch(/^fhir_facade_outbox_failures_total\{lane="email",outcome="failed"\} 0$/m);
  }, 60_000);
});

describe('a code voided by wrong tries while its mail waits for the SMTP server', () => {
  let gw: TestGateway;
  let smtp: SmtpCapture | undefined;

  afterAll(async () => {
    await gw?.close();
    await smtp?.close();
  });

  it('is not mailed (it could no longer sign anyone up), and is audited for the admin to re-issue', async () => {
    const port = await unusedPort();
    gw = await startTestGateway({ env: { SMTP_URL: `smtp://127.0.0.1:${port}` } });
    const email = 'bo.voided@example.com';
    const created = await gw.call('/fhir/patient', {
      method: 'POST',
      token: await gw.adminToken(),
      json: { name: 'Bo Chen', email, dob: '1992-09-30' },
    });
    expect(created.status).toBe(201);
    const mailRows = () => codeMailRows(gw);
    await waitFor('the first mail to fail', async () => (await mailRows()).some((r) => r.attempts >= 1));
    for (let i = 0; i < 5; i++) {
      const wrong = await gw.call('/auth/signup', {
        method: 'POST',
        json: { email, access_code: 'AAAA-AAAA-AAAA-AAAA', password: PASSWORD },
      });
      expect(wrong.status).toBe(400);
    }
    smtp = await startSmtpCapture({ port });
    await waitFor(
      'the voided code to be given up',
      async () => (await mailRows()).some((r) => r.status === 'failed' && r.last_error === 'voided'),
      20_000,
    );
    expect(smtp.messages.filter((m) => JSON.stringify(m.to).includes(email))).toHaveLength(0);
    // unlike a re-issued code, no newer mail follows: GET /admin/audit?action=mail.failed names the account
    const { user_id } = (await created.json()) as { user_id: string };
    const audit = await gw.call('/admin/audit?action=mail.failed', { token: await gw.adminToken() });
    const { entries } = (await audit.json()) as {
      entries: { target: { user_id: string }; detail: unknown }[];
    };
    expect(entries).toEqual([
      expect.objectContaining({
        target: expect.objectContaining({ user_id }),
        detail: expect.objectContaining({ reason: 'voided' }),
      }),
    ]);
  }, 60_000);
});

describe('a code mail the SMTP server refuses for good', () => {
  let gw: TestGateway;
  let relay: SmtpCapture;
  let admin: string;

  beforeAll(async () => {
    relay = await startSmtpCapture({ refuse: ['typo@example.com'] });
    gw = await startTestGateway({ env: { SMTP_URL: relay.url } });
    admin = await gw.adminToken();
  });
  afterAll(async () => {
    await gw?.close();
    await relay?.close();
  });

  it('is audited as mail.failed with the account as its target, so the admin knows whom to send a new code', async () => {
    const created = await gw.call('/fhir/patient', {
      method: 'POST',
      token: admin,
      json: { name: 'Tia Typo', email: 'typo@example.com', dob: '1980-04-12' },
    });
    expect(created.status).toBe(201);
    const { user_id, fhir_id } = (await created.json()) as { user_id: string; fhir_id: string };
    let entries: Record<string, unknown>[] = [];
    await waitFor('the refused mail to be audited', async () => {
      const audit = await gw.call('/admin/audit?action=mail.failed', { token: admin });
      entries = ((await audit.json()) as { entries: Record<string, unknown>[] }).entries;
      return entries.length > 0;
    });
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({
      action: 'mail.failed',
      outcome: 'failed',
      target: { user_id, fhir_type: 'Patient', fhir_id },
      detail: { purpose: 'signup', reason: 'smtp_550' },
    });
    // the address stays out of the entry: the target names the account
    expect(JSON.stringify(entries[0])).not.toContain('typo@');
  }, 30_000);
});
