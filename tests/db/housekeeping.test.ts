import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHousekeeping, sweep } from '../../src/housekeeping.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';

/** The periodic clean-up (src/housekeeping.ts): what expired goes, what is live stays. */
describe.each(DIALECTS)('housekeeping (%s)', (dialect) => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ dialect });
  });
  afterAll(() => gw.close());

  it('deletes expired SMART store rows and keeps live ones and rows without an expiry', async () => {
    const now = Date.now();
    const row = (id: string, expiresAt: string | null) => ({
      model: 'AuthorizationCode',
      id,
      payload: '{}',
      grant_id: null,
      uid: null,
      expires_at: expiresAt,
      consumed_at: null,
    });
    await gw.deps.db
      .insertInto('oauth_store')
      .values([
        row('hk-expired', new Date(now - 60_000).toISOString()),
        row('hk-live', new Date(now + 60_000).toISOString()),
        row('hk-no-expiry', null),
      ])
      .execute();
    await sweep(gw.deps.db, gw.deps.clock, gw.deps.logger);
    const left = await gw.deps.db
      .selectFrom('oauth_store')
      .select('id')
      .where('id', 'like', 'hk-%')
      .orderBy('id')
      .execute();
    expect(left.map((r) => r.id)).toEqual(['hk-live', 'hk-no-expiry']);
  });

  it('sweeps soon after start, not only after the first 10 minutes (restarts would keep it from running)', async () => {
    const now = Date.now();
    await gw.deps.db
      .insertInto('oauth_store')
      .values({
        model: 'AuthorizationCode',
        id: 'hk-start-expired',
        payload: '{}',
        grant_id: null,
        uid: null,
        expires_at: new Date(now - 60_000).toISOString(),
        consumed_at: null,
      })
      .execute();
    const stop = startHousekeeping(gw.deps.db, gw.deps.clock, gw.deps.logger, 50);
    await new Promise((r) => setTimeout(r, 500));
    await stop();
    const left = await gw.deps.db
      .selectFrom('oauth_store')
      .select('id')
      .where('id', '=', 'hk-start-expired')
      .execute();
    expect(left).toEqual([]);
  });
});
