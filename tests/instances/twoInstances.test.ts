import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RATE_LIMITS } from '../../src/auth/rateLimiter.js';
import { codeIn, mailsTo } from '../helpers/journey.js';
import { createTestSchema, TEST_DATABASE_URL, type TestSchema } from '../helpers/postgres.js';
import { type RunningProcess, startGatewayProcess, startStandaloneFhir } from '../helpers/processes.js';
import { clearOfWindowEnd } from '../helpers/rateWindows.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';
import { tempDir } from '../helpers/tempDir.js';

/**
 * Two gateway processes (`npm start`) behind one imaginary load balancer: one PostgreSQL
 * database, one standalone FHIR server, one SMTP server, the same APP_SECRET and signing key,
 * the same public URL. Whatever one instance decides, the other must honour — codes, rate
 * limits, sessions, idempotency keys and the mail outbox all live in the database.
 */

const ADMIN_EMAIL = 'admin@example.com';
const ADMIN_PASSWORD = 'correct horse battery staple';
const PASSWORD = 'a long and plain passphrase';
/** docs/security.md, "Rate limits": login per account, 5 failures per 5 minutes. */
const LOGIN_FAILURES_PER_ACCOUNT = 5;

if (!TEST_DATABASE_URL) {
  console.info('[tests] TEST_DATABASE_URL is unset: the two-instance test (tests/instances/) is skipped');
}

interface Instance {
  readonly name: 'A' | 'B';
  readonly url: string;
  readonly proc: RunningProcess;
}

interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly json: Record<string, unknown>;
}

async function call(
  instance: Instance,
  path: string,
  init: { method?: string; json?: unknown; token?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.json !== undefined) headers['content-type'] = 'application/json';
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  const response = await fetch(`${instance.url}${path}`, {
    method: init.method ?? (init.json === undefined ? 'GET' : 'POST'),
    headers,
    ...(init.json !== undefined ? { body: JSON.stringify(init.json) } : {}),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, json: text ? JSON.parse(text) : {} };
}

function login(instance: Instance, email: string, password: string): Promise<Answer> {
  return call(instance, '/auth/login', { json: { email, password } });
}

describe.skipIf(!TEST_DATABASE_URL)('two gateway instances on one PostgreSQL database', () => {
  let schema: TestSchema;
  let db: pg.Client;
  let smtp: SmtpCapture;
  let fhir: { proc: RunningProcess; baseUrl: string };
  let a: Instance;
  let b: Instance;
  let adminToken: string;
  const dirs: string[] = [];
  /** Every address a provisioning mail was asked for, with how many creates asked (replays included). */
  const provisioned: string[] = [];

  beforeAll(async () => {
    schema = await createTestSchema();
    db = new pg.Client({ connectionString: schema.url });
    await db.connect();
    smtp = await startSmtpCapture();
    const fhirDir = tempDir();
    dirs.push(fhirDir);
    fhir = await startStandaloneFhir(fhirDir);
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const shared = {
      // one public URL behind the balancer: the token issuer and account identifiers must match
      PUBLIC_BASE_URL: 'http://gateway.test',
      DATABASE_URL: schema.url,
      FHIR_BASE_URL: fhir.baseUrl,
      SMTP_URL: smtp.url,
      APP_SECRET: randomBytes(32).toString('base64'),
      JWT_PRIVATE_KEY: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      ADMIN_EMAIL,
      ADMIN_PASSWORD,
    };
    const start = async (name: 'A' | 'B'): Promise<Instance> => {
      const dataDir = tempDir();
      dirs.push(dataDir);
      const { proc, url } = await startGatewayProcess({ ...shared, DATA_DIR: dataDir });
      return { name, url, proc };
    };
    // one after the other, as a rolling start would: both run the same migrations and admin bootstrap
    a = await start('A');
    b = await start('B');
    const answer = await login(a, ADMIN_EMAIL, ADMIN_PASSWORD);
    expect(answer.status).toBe(200);
    adminToken = answer.json.token as string;
  }, 180_000);

  afterAll(async () => {
    await a?.proc.kill('SIGTERM');
    await b?.proc.kill('SIGTERM');
    await fhir?.proc.kill('SIGTERM');
    await smtp?.close();
    await db?.end();
    await schema?.drop();
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  async function provision(via: Instance, email: string, idempotencyKey?: string): Promise<Answer> {
    provisioned.push(email);
    return call(via, '/fhir/patient', {
      token: adminToken,
      json: { name: { given: ['Two'], family: 'Instances' }, email, dob: '1980-04-12' },
      headers: idempotencyKey ? { 'idempotency-key': idempotencyKey } : {},
    });
  }

  it('accepts a token signed by one instance on the other (same key, same issuer)', async () => {
    const me = await call(b, '/auth/me', { token: adminToken });
    expect(me.status).toBe(200);
    expect((me.json.user as { email: string }).email).toBe(ADMIN_EMAIL);
    const jwksA = await call(a, '/.well-known/jwks.json');
    const jwksB = await call(b, '/.well-known/jwks.json');
    expect(jwksB.json).toEqual(jwksA.json);
  });

  it('lets exactly one of 20 concurrent signups with one code, split over both, create the account', async () => {
    const email = `signup-${randomUUID().slice(0, 8)}@example.com`;
    expect((await provision(a, email)).status).toBe(201);
    const [mail] = await mailsTo(smtp, email, 1, 15_000);
    const code = codeIn(mail!);

    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        call(i % 2 === 0 ? a : b, '/auth/signup', { json: { email, access_code: code, password: PASSWORD } }),
      ),
    );
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    // the others: the spent code, or the per-email code limit (10 / 15 min) both instances share
    for (const answer of answers.filter((r) => r.status !== 201)) {
      expect([400, 429]).toContain(answer.status);
      expect(['invalid_access_code', 'rate_limited']).toContain(answer.json.code);
    }
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(10);

    const users = await db.query('select id, is_registered from users where email = $1', [email]);
    expect(users.rows).toHaveLength(1);
    expect(Number(users.rows[0].is_registered)).toBe(1);
    const sessions = await db.query('select count(*)::int as n from sessions where user_id = $1', [
      users.rows[0].id,
    ]);
    expect(sessions.rows[0].n).toBe(1);
  });

  it('reaches the per-account login limit through both instances together', async () => {
    const email = `limit-${randomUUID().slice(0, 8)}@example.com`;
    expect((await provision(b, email)).status).toBe(201);
    const [mail] = await mailsTo(smtp, email, 1, 15_000);
    const signup = await call(a, '/auth/signup', {
      json: { email, access_code: codeIn(mail!), password: PASSWORD },
    });
    expect(signup.status).toBe(201);

    // 5 wrong passwords, alternating A, B, A, B, A: each instance alone saw fewer than the limit
    await clearOfWindowEnd(RATE_LIMITS.loginAccount.windowSeconds, 15_000);
    for (let i = 0; i < LOGIN_FAILURES_PER_ACCOUNT; i++) {
      const wrong = await login(i % 2 === 0 ? a : b, email, `not the password ${i} of this account`);
      expect(wrong.status, `failure ${i + 1}`).toBe(401);
    }
    // now even the right password waits, on either instance
    for (const instance of [b, a]) {
      const right = await login(instance, email, PASSWORD);
      expect(right.status, instance.name).toBe(429);
      expect(right.json.code).toBe('rate_limited');
      expect(Number(right.headers.get('retry-after'))).toBeGreaterThan(0);
    }
  });

  it('refuses on one instance, at its next request, a session logged out on the other', async () => {
    const session = await login(a, ADMIN_EMAIL, ADMIN_PASSWORD);
    expect(session.status).toBe(200);
    const token = session.json.token as string;
    const refreshToken = session.json.refresh_token as string;
    // B has verified (and may have cached) the token before the logout
    expect((await call(b, '/auth/me', { token })).status).toBe(200);

    expect((await call(a, '/auth/logout', { method: 'POST', token })).status).toBe(204);

    const after = await call(b, '/auth/me', { token });
    expect(after.status).toBe(401);
    const refresh = await call(b, '/auth/refresh', { json: { refresh_token: refreshToken } });
    expect(refresh.status).toBe(401);
    expect(refresh.json.code).toBe('invalid_refresh_token');
    // the admin's other session is untouched
    expect((await call(b, '/auth/me', { token: adminToken })).status).toBe(200);
  });

  it('answers an idempotent create replayed on the other instance with the first answer', async () => {
    const email = `idem-${randomUUID().slice(0, 8)}@example.com`;
    const key = `two-instances-${randomUUID()}`;
    const first = await provision(a, email, key);
    expect(first.status).toBe(201);
    const replay = await provision(b, email, key);
    expect(replay.status).toBe(201);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.json).toEqual(first.json);
    const users = await db.query('select count(*)::int as n from users where email = $1', [email]);
    expect(users.rows[0].n).toBe(1);
  });

  it('sends each mail exactly once although both instances run an outbox worker', async () => {
    // a few more mails, queued through both instances at once, so both workers find work
    const emails = Array.from({ length: 6 }, (_, i) => `mail-${i}-${randomUUID().slice(0, 8)}@example.com`);
    const created = await Promise.all(emails.map((email, i) => provision(i % 2 === 0 ? a : b, email)));
    expect(created.map((r) => r.status)).toEqual(emails.map(() => 201));

    const expected = new Set(provisioned);
    await smtp.waitFor(expected.size, 30_000);
    // the outbox is settled, and a little longer: a late duplicate would show now
    const deadline = Date.now() + 30_000;
    for (;;) {
      const pending = await db.query(
        "select count(*)::int as n from outbox where kind = 'email' and status in ('pending', 'sending')",
      );
      if (pending.rows[0].n === 0) break;
      if (Date.now() > deadline) throw new Error('the outbox did not empty');
      await new Promise((r) => setTimeout(r, 200));
    }
    await new Promise((r) => setTimeout(r, 2_000));

    const perRecipient = new Map<string, number>();
    for (const message of smtp.messages) {
      const to = (Array.isArray(message.to) ? message.to : [message.to])
        .flatMap((address) => address?.value ?? [])
        .map((v) => v.address ?? '');
      for (const address of to) perRecipient.set(address, (perRecipient.get(address) ?? 0) + 1);
    }
    expect(new Set(perRecipient.keys())).toEqual(expected);
    expect([...perRecipient.entries()].filter(([, n]) => n !== 1)).toEqual([]);
  });
});
