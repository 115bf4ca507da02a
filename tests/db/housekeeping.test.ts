import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OutboxStatus } from '../../db/schema.js';
import { purgeDeliveredOutboxRows } from '../../src/email/outbox.js';
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

  const DAY = 86_400_000;
  const ago = (ms: number) => new Date(Date.now() - ms).toISOString();
  const outboxRow = (id: string, status: OutboxStatus, sentAt: string | null) => ({
    id,
    kind: 'fhir_audit_event' as const,
    payload: '{}',
    status,
    attempts: 1,
    // a row the running lanes would claim must not be due (nor its lease lapsed): they would send it
    next_attempt_at: status === 'pending' ? ago(-DAY) : ago(9 * DAY),
    locked_until: status === 'sending' ? ago(-DAY) : null,
    last_error: null,
    created_at: ago(9 * DAY),
    sent_at: sentAt,
  });
  const outboxLeft = async (prefix: string) =>
    (
      await gw.deps.db
        .selectFrom('outbox')
        .select('id')
        .where('id', 'like', `${prefix}%`)
        .orderBy('id')
        .execute()
    ).map((r) => r.id);

  it('deletes outbox rows delivered over a week ago, and keeps newer, undelivered and failed ones', async () => {
    await gw.deps.db
      .insertInto('outbox')
      .values([
        outboxRow('hk-ob-1-sent-8-days-ago', 'sent', ago(8 * DAY)),
        outboxRow('hk-ob-2-sent-6-days-ago', 'sent', ago(6 * DAY)),
        outboxRow('hk-ob-3-pending', 'pending', null),
        outboxRow('hk-ob-4-sending', 'sending', null),
        outboxRow('hk-ob-5-failed', 'failed', null),
      ])
      .execute();
    await sweep(gw.deps.db, gw.deps.clock, gw.deps.logger);
    expect(await outboxLeft('hk-ob-')).toEqual([
      'hk-ob-2-sent-6-days-ago',
      'hk-ob-3-pending',
      'hk-ob-4-sending',
      'hk-ob-5-failed',
    ]);
  });

  it('purges delivered rows a chunk at a time until none is left, and stops when asked', async () => {
    const rows = Array.from({ length: 1_201 }, (_, i) =>
      outboxRow(`hk-bulk-${String(i).padStart(4, '0')}`, 'sent', ago(8 * DAY)),
    );
    for (let i = 0; i < rows.length; i += 200)
      await gw.deps.db
        .insertInto('outbox')
        .values(rows.slice(i, i + 200))
        .execute();
    const before = ago(7 * DAY);
    expect(await purgeDeliveredOutboxRows(gw.deps.db, before, () => true)).toBe(0);
    let statements = 0;
    // stopped after the first statement: one chunk gone, the rest left for the next sweep
    expect(await purgeDeliveredOutboxRows(gw.deps.db, before, () => statements++ > 0)).toBe(500);
    expect(await purgeDeliveredOutboxRows(gw.deps.db, before)).toBe(701);
    expect(await outboxLeft('hk-bulk-')).toEqual([]);
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
