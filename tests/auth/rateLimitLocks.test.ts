import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countHit, type LimitKey, RATE_LIMITS, refundHit } from '../../src/auth/rateLimiter.js';
import { ManualClock } from '../helpers/clock.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';

/**
 * A successful login gives its hits back inside its transaction while other attempts on the same
 * account and address count theirs: the two must lock the counters in one order. An UPDATE over
 * both windows locked them in the table's order on PostgreSQL and deadlocked (40P01, a 500) in
 * about one round in fifteen of this test.
 */
describe.each(DIALECTS)('rate-limit counters under concurrent count and refund (%s)', (dialect) => {
  let gw: TestGateway;
  const clock = new ManualClock();

  beforeAll(async () => {
    gw = await startTestGateway({ dialect, clock });
  });
  afterAll(() => gw.close());

  const keysOf = (email: string): LimitKey[] => [
    { rule: RATE_LIMITS.loginAccount, subject: email },
    { rule: RATE_LIMITS.loginIp, subject: '192.0.2.7' },
  ];

  it('never deadlocks a refund against counts of the same windows', async () => {
    const failures: string[] = [];
    for (let round = 0; round < 150; round++) {
      const email = `round-${round}@example.com`;
      // the address's window is older than the account's (another account tried from it first)
      await countHit(gw.deps.db, clock, [keysOf('someone-else@example.com')[1]!], { enforce: false });
      await countHit(gw.deps.db, clock, keysOf(email), { enforce: false });
      const results = await Promise.allSettled([
        gw.deps.db.transaction().execute(async (trx) => {
          await refundHit(trx, clock, keysOf(email));
          // the login's other writes follow, its locks held until the commit
          await trx.selectFrom('rate_limits').select('count').execute();
        }),
        ...Array.from({ length: 3 }, () => countHit(gw.deps.db, clock, keysOf(email), { enforce: false })),
      ]);
      for (const result of results)
        if (result.status === 'rejected') failures.push(String((result.reason as { code?: unknown }).code));
      await gw.deps.db.deleteFrom('rate_limits').execute();
      // PostgreSQL finds a deadlock only after deadlock_timeout (1 s): the first one tells
      if (failures.length > 0) break;
    }
    expect(failures).toEqual([]);
  });
});
