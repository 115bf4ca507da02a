import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

/**
 * On SQLite a login's writes (the attempt counted; the success's or failure's stamp, audit and
 * session) run on the writes connection's thread (db/connection.ts, DatabaseHandle.writes).
 * better-sqlite3 waits for another writer's lock in its busy handler, on the thread that runs the
 * statement: before, a login that met a lock held by another process (a backup, the sqlite3
 * shell, another worker's long write) stopped every request of the process for as long as it
 * waited. Now the event loop goes on, and the login commits once the lock is free.
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** How many 5 ms timers the event loop ran during `ms`: ~ms/5 when it is free, none while a wait holds it. */
async function ticksDuring(ms: number): Promise<number> {
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 5);
  await sleep(ms);
  clearInterval(ticker);
  return ticks;
}

const WRONG_PASSWORD = 'not-the-password-at-all';

describe("a login that meets another writer's lock (sqlite)", () => {
  let gw: TestGateway;
  // another process's connection to the gateway's database file
  let other: Database.Database;
  beforeAll(async () => {
    gw = await startTestGateway({ dialect: 'sqlite' });
  });
  afterAll(() => gw.close());
  afterEach(() => {
    if (other.inTransaction) other.exec('ROLLBACK');
    other.close();
  });

  /** Another process's write transaction takes SQLite's one write lock. */
  const takeTheLock = () => {
    other.exec('BEGIN IMMEDIATE');
    other.exec(`DELETE FROM rate_limits WHERE bucket = 'nothing'`);
  };

  /** A login under way, and whether it has been answered yet. */
  const loginUnderWay = (email: string, password: string) => {
    let answered = false;
    const answer = gw.call('/auth/login', { method: 'POST', json: { email, password } }).then((response) => {
      answered = true;
      return response;
    });
    return { answer, answered: () => answered };
  };

  /** A fresh account (each case its own rate-limit counters) and the other connection. */
  const setUp = async () => {
    const user = await gw.seedUser({ role: 'patient' });
    other = new Database(path.join(gw.dataDir, 'fhir-facade.sqlite'));
    return user;
  };

  /** The outcomes of the account's login audit entries, written with the login's other writes. */
  const loginAudit = async (userId: string) =>
    (
      await gw.deps.db
        .selectFrom('audit_log')
        .select('outcome')
        .where('action', '=', 'auth.login')
        .where('actor_user_id', '=', userId)
        .execute()
    ).map((entry) => entry.outcome);

  it.each([
    ['succeeds', 200, 'success'],
    ['fails', 401, 'failed'],
  ])(
    'waits for it at the attempt count off the event loop, and %s once it is free',
    async (_, status, outcome) => {
      const user = await setUp();
      takeTheLock();
      const login = loginUnderWay(user.email, status === 200 ? user.password : WRONG_PASSWORD);
      // ~60 ticks in 300 ms: a wait on the event loop allows none
      expect(await ticksDuring(300)).toBeGreaterThan(20);
      expect(login.answered()).toBe(false);
      other.exec('COMMIT');
      expect((await login.answer).status).toBe(status);
      expect(await loginAudit(user.id)).toEqual([outcome]);
    },
  );

  it.each([
    ['success', 200, 'success'],
    ['failure', 401, 'failed'],
  ])("waits off the event loop when the %s's transaction meets it", async (_, status, outcome) => {
    const user = await setUp();
    // taken as the password check starts: after the attempt was counted, before the transaction
    const verify = gw.deps.passwords.verify.bind(gw.deps.passwords);
    const check = vi.spyOn(gw.deps.passwords, 'verify').mockImplementation((hash, password) => {
      takeTheLock();
      return verify(hash, password);
    });
    try {
      const login = loginUnderWay(user.email, status === 200 ? user.password : WRONG_PASSWORD);
      await vi.waitFor(() => expect(other.inTransaction).toBe(true), { timeout: 5_000, interval: 5 });
      expect(await ticksDuring(300)).toBeGreaterThan(20);
      expect(login.answered()).toBe(false);
      other.exec('COMMIT');
      expect((await login.answer).status).toBe(status);
    } finally {
      check.mockRestore();
    }
    expect(await loginAudit(user.id)).toEqual([outcome]);
  });

  it('answers logins that meet a lock held long with 503 after one wait, not one wait after another', async () => {
    const user = await setUp();
    takeTheLock();
    const started = performance.now();
    const answers = await Promise.all(
      Array.from({ length: 4 }, () => loginUnderWay(user.email, user.password).answer),
    );
    const took = performance.now() - started;
    expect(answers.map((answer) => answer.status)).toEqual([503, 503, 503, 503]);
    // the first waits the whole 2 s and closes the thread's gate (db/sqliteLockGate.mjs), the
    // others fail at once: four waits in turn on the one thread took 8 s
    expect(took).toBeLessThan(4_000);
    other.exec('ROLLBACK');
    // the lock gone, a probe opens the gate again within 200 ms
    await vi.waitFor(
      async () => expect((await loginUnderWay(user.email, user.password).answer).status).toBe(200),
      { timeout: 3_000, interval: 250 },
    );
  });
});
