import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OutboxStatus } from '../../db/schema.js';
import { purgeDeliveredOutboxRows } from '../../src/email/outbox.js';
import { startHousekeeping, sweep } from '../../src/housekeeping.js';
import { uuidv7 } from '../../src/ids.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';

/** The periodic clean-up (src/housekeeping.ts): what expired goes, what is live stays. */
describe.each(DIALECTS)('housekeeping (%s)', (dialect) => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ dialect });
  });
  afterAll(() => gw.close());
  const ttl = () => ({ refreshTokenTtlSeconds: gw.deps.config.jwt.refreshTokenTtlSeconds });
  // sessions need an account
  const firstAdmin = () =>
    gw.deps.db.selectFrom('users').select('id').where('role', '=', 'admin').executeTakeFirstOrThrow();

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
    await sweep(gw.deps.db, gw.deps.clock, gw.deps.logger, ttl());
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
    await sweep(gw.deps.db, gw.deps.clock, gw.deps.logger, ttl());
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

  it('deletes sessions a day after they ended, with their refresh tokens; keeps later and live ones', async () => {
    const admin = await firstAdmin();
    const session = (id: string, endedAgo: number, clientId: string | null = null) => ({
      id,
      user_id: admin.id,
      created_at: ago(30 * DAY),
      expires_at: ago(endedAgo),
      revoked_at: null,
      revoked_reason: null,
      client_id: clientId,
    });
    await gw.deps.db
      .insertInto('sessions')
      .values([
        session('hk-s-1-ended-2-days-ago', 2 * DAY),
        // a SMART grant's session: its id is oidc-provider's, not a UUIDv7
        session('hk-s-2-smart-ended-2-days-ago', 2 * DAY, 'app-1'),
        session('hk-s-3-ended-an-hour-ago', 3_600_000),
        session('hk-s-4-live', -DAY),
      ])
      .execute();
    await gw.deps.db
      .insertInto('refresh_tokens')
      .values({
        id: uuidv7(Date.now() - 3 * DAY),
        session_id: 'hk-s-1-ended-2-days-ago',
        token_hash: 'hk-token-of-an-ended-session',
        created_at: ago(3 * DAY),
        // expired long ago too, but within the TTL of its making: the session takes it along
        expires_at: ago(2 * DAY),
        used_at: null,
      })
      .execute();
    await sweep(gw.deps.db, gw.deps.clock, gw.deps.logger, ttl());
    const sessions = await gw.deps.db
      .selectFrom('sessions')
      .select('id')
      .where('id', 'like', 'hk-s-%')
      .orderBy('id')
      .execute();
    expect(sessions.map((r) => r.id)).toEqual(['hk-s-3-ended-an-hour-ago', 'hk-s-4-live']);
    const tokens = await gw.deps.db
      .selectFrom('refresh_tokens')
      .select('id')
      .where('token_hash', '=', 'hk-token-of-an-ended-session')
      .execute();
    expect(tokens).toEqual([]);
  });

  it('deletes refresh tokens past their expiry that were made a TTL ago; keeps live ones', async () => {
    const admin = await firstAdmin();
    await gw.deps.db
      .insertInto('sessions')
      .values({
        id: 'hk-rt-session',
        user_id: admin.id,
        created_at: ago(20 * DAY),
        expires_at: ago(-10 * DAY),
        revoked_at: null,
        revoked_reason: null,
        client_id: null,
      })
      .execute();
    const ttlMs = gw.deps.config.jwt.refreshTokenTtlSeconds * 1000;
    const token = (hash: string, madeAgo: number, expiresAgo: number) => ({
      id: uuidv7(Date.now() - madeAgo),
      session_id: 'hk-rt-session',
      token_hash: hash,
      created_at: ago(madeAgo),
      expires_at: ago(expiresAgo),
      used_at: null,
    });
    await gw.deps.db
      .insertInto('refresh_tokens')
      .values([
        token('hk-rt-1-made-a-ttl-ago-expired', ttlMs + DAY, DAY),
        // expired early (made for a session ending sooner): it goes once a TTL has passed since its making
        token('hk-rt-2-made-yesterday-expired', DAY, 3_600_000),
        token('hk-rt-3-live', 3_600_000, -DAY),
      ])
      .execute();
    await sweep(gw.deps.db, gw.deps.clock, gw.deps.logger, ttl());
    const left = await gw.deps.db
      .selectFrom('refresh_tokens')
      .select('token_hash')
      .where('token_hash', 'like', 'hk-rt-%')
      .orderBy('token_hash')
      .execute();
    expect(left.map((r) => r.token_hash)).toEqual(['hk-rt-2-made-yesterday-expired', 'hk-rt-3-live']);
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
    const stop = startHousekeeping(gw.deps.db, gw.deps.clock, gw.deps.logger, ttl(), 50);
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
