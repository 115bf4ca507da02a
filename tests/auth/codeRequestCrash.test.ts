import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { ADMIN_EMAIL, ADMIN_PASSWORD, tempDir } from '../helpers/gateway.js';
import { codeIn, mailsTo } from '../helpers/journey.js';
import { createTestSchema, TEST_DATABASE_URL } from '../helpers/postgres.js';
import { type RunningProcess, startGatewayProcess } from '../helpers/processes.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * "No lost emails — also when the process is killed halfway", for the codes sent after a 202
 * (resend a signup code, forgot password): the gateway (a real `npm start` process) is killed
 * with SIGKILL after answering 202 and before the commit that queues the mail (held back by a
 * lock on the account's row), then restarted on the same data: the mail goes out, once.
 * PostgreSQL only: a row lock holds the one commit back and lets the request's own writes pass;
 * SQLite's lock is the whole file's.
 */

const running: RunningProcess[] = [];
let smtp: SmtpCapture | undefined;
afterAll(async () => {
  for (const proc of running.reverse()) await proc.kill();
  await smtp?.close();
});

const post = (url: string, path: string, body: unknown, token?: string) =>
  fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });

describe.skipIf(!TEST_DATABASE_URL)('a code request whose process is killed after its 202 (postgres)', () => {
  it('is mailed after the restart, once', async () => {
    smtp = await startSmtpCapture();
    const schema = await createTestSchema();
    const env = {
      DATA_DIR: tempDir('ff-code-crash-'),
      DATABASE_URL: schema.url,
      SMTP_URL: smtp.url,
      ADMIN_EMAIL,
      ADMIN_PASSWORD,
      WORKERS: '1',
      LOG_LEVEL: 'warn',
    };
    let gateway = await startGatewayProcess(env);
    running.push(gateway.proc);
    const login = await post(gateway.url, '/auth/login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
    const { token } = (await login.json()) as { token: string };
    const email = 'killed-after-202@example.com';
    const created = await post(
      gateway.url,
      '/fhir/patient',
      { name: 'Kim Killed', email, dob: '1990-01-01' },
      token,
    );
    expect(created.status).toBe(201);
    const [first] = await mailsTo(smtp, email, 1, 15_000);

    // the account's row locked: the request's own writes pass, the commit that queues the mail waits
    const locker = new pg.Client({ connectionString: schema.url });
    await locker.connect();
    try {
      await locker.query('begin');
      await locker.query('select id from users where email = $1 for update', [email]);
      expect((await post(gateway.url, '/auth/access-code/resend', { email })).status).toBe(202);
      await new Promise((r) => setTimeout(r, 300));
      await gateway.proc.kill('SIGKILL');
    } finally {
      await locker.query('rollback');
      await locker.end();
    }
    expect(smtp.messages.filter((m) => JSON.stringify(m.to ?? '').includes(email))).toHaveLength(1);

    gateway = await startGatewayProcess(env, gateway.port);
    running.push(gateway.proc);
    // the request's lease (15 s) lapses, then the next reconciler round (every 10 s) fulfils it
    const [, resent] = await mailsTo(smtp, email, 2, 45_000);
    expect(codeIn(resent!)).not.toBe(codeIn(first!));
    await new Promise((r) => setTimeout(r, 12_000));
    expect(smtp.messages.filter((m) => JSON.stringify(m.to ?? '').includes(email))).toHaveLength(2);
  }, 120_000);
});
