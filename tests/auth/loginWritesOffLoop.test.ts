import { createHash } from 'node:crypto';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startTestGateway, type TestGateway } from '../helpers/gateway.js';

/** Stands for the seeded user's own password in the table below. */
const USER_PASSWORD_OF_SEED = 'the seeded password';

/**
 * On SQLite a login's writes (the attempt counted; the success's stamp, audit and session) run on
 * the writes connection's thread (db/connection.ts, DatabaseHandle.writes). better-sqlite3 waits
 * for another writer's lock in its busy handler, on the thread that runs the statement: before,
 * a login that met a lock held by another process (a backup, the sqlite3 shell, another worker's
 * long write) stopped every request of the process for as long as it waited. Now the event loop
 * goes on, and the login commits once the lock is free.
 */
describe("a login that meets another writer's lock (sqlite)", () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ dialect: 'sqlite' });
  });
  afterAll(() => gw.close());

  const login = (email: string, password: string) =>
    gw.call('/auth/login', { method: 'POST', json: { email, password } });

  it.each([
    ['succeeds', ADMIN_PASSWORD, 200],
    ['fails', 'not-the-password-at-all', 401],
  ])('waits off the event loop and %s once the lock is free', async (_, password, status) => {
    const other = new Database(path.join(gw.dataDir, 'fhir-facade.sqlite'));
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    try {
      // another process's write transaction holds SQLite's one write lock
      other.exec('BEGIN IMMEDIATE');
      other.exec(`DELETE FROM rate_limits WHERE bucket = 'nothing'`);
      let answered = false;
      const answer = login(ADMIN_EMAIL, password).then((response) => {
        answered = true;
        return response;
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(answered).toBe(false);
      // ~60 ticks of 5 ms in 300 ms: a wait on the event loop would have allowed none
      expect(ticks).toBeGreaterThan(20);
      other.exec('COMMIT');
      expect((await answer).status).toBe(status);
    } finally {
      clearInterval(ticker);
      if (other.inTransaction) other.exec('ROLLBACK');
      other.close();
    }
    // the login's audit entry committed with it
    const entries = await gw.deps.db
      .selectFrom('audit_log')
      .select('outcome')
      .where('action', '=', 'auth.login')
      .orderBy('id', 'desc')
      .limit(1)
      .execute();
    expect(entries).toEqual([{ outcome: status === 200 ? 'success' : 'failed' }]);
  });

  it('answers logins that meet a lock held long with 503 after one wait, not one wait after another', async () => {
    const user = await gw.seedUser({ role: 'practitioner' });
    const other = new Database(path.join(gw.dataDir, 'fhir-facade.sqlite'));
    try {
      other.exec('BEGIN IMMEDIATE');
      other.exec(`DELETE FROM rate_limits WHERE bucket = 'nothing'`);
      const started = performance.now();
      const answers = await Promise.all(Array.from({ length: 4 }, () => login(user.email, user.password)));
      const took = performance.now() - started;
      expect(answers.map((answer) => answer.status)).toEqual([503, 503, 503, 503]);
      // the first waits the whole 2 s and closes the thread's gate (db/sqliteLockGate.mjs), the
      // others fail at once: four waits in turn on the one thread took 8 s
      expect(took).toBeLessThan(4_000);
    } finally {
      if (other.inTransaction) other.exec('ROLLBACK');
      other.close();
    }
    // the lock gone, a probe opens the gate again within 200 ms
    await vi.waitFor(async () => expect((await login(user.email, user.password)).status).toBe(200), {
      timeout: 3_000,
      interval: 250,
    });
  });

  /** The login.account counter's bucket of an email (src/auth/rateLimiter.ts windowOf). */
  const accountBucket = (email: string) =>
    `login.account:${createHash('sha256').update(email).digest('base64url').slice(0, 22)}`;

  it.each([
    ['success', USER_PASSWORD_OF_SEED, 200],
    ['failure', 'not-the-password-at-all', 401],
  ])("waits off the event loop when the %s's transaction meets the lock", async (_, password, status) => {
    const user = await gw.seedUser({ role: 'patient' });
    const other = new Database(path.join(gw.dataDir, 'fhir-facade.sqlite'));
    const counted = other.prepare('SELECT count FROM rate_limits WHERE bucket = ?').pluck();
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    try {
      let answered = false;
      const answer = login(user.email, password === USER_PASSWORD_OF_SEED ? user.password : password).then(
        (response) => {
          answered = true;
          return response;
        },
      );
      // the attempt is counted before the password is checked (argon2, tens of ms): the lock is
      // taken in between, so it is the transaction after the check that meets it
      await vi.waitFor(() => expect(counted.get(accountBucket(user.email))).toBe(1), {
        timeout: 5_000,
        interval: 1,
      });
      other.exec('BEGIN IMMEDIATE');
      other.exec(`DELETE FROM rate_limits WHERE bucket = 'nothing'`);
      ticks = 0;
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(answered).toBe(false);
      expect(ticks).toBeGreaterThan(20);
      other.exec('COMMIT');
      expect((await answer).status).toBe(status);
    } finally {
      clearInterval(ticker);
      if (other.inTransaction) other.exec('ROLLBACK');
      other.close();
    }
    const entries = await gw.deps.db
      .selectFrom('audit_log')
      .select('outcome')
      .where('action', '=', 'auth.login')
      .where('actor_user_id', '=', user.id)
      .execute();
    expect(entries).toEqual([{ outcome: status === 200 ? 'success' : 'failed' }]);
  });
});
