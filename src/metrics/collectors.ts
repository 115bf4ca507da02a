import type { Kysely } from 'kysely';
import { type Database, OUTBOX_KINDS, type OutboxKind } from '../../db/schema.js';

/**
 * The states /metrics reports, read from the database when it is scraped (every 15-60 s), never
 * on a request: one grouped query on the outbox (index outbox_lane_due) and two counts of
 * sessions. Counts only — no user, email or patient leaves these queries.
 */

export interface LaneBacklog {
  readonly lane: OutboxKind;
  readonly count: number;
  /** created_at of the oldest waiting row (ISO 8601). */
  readonly oldest: string | null;
}

/** Rows not delivered yet (pending, or claimed and being sent) per lane. */
export async function readOutboxBacklog(db: Kysely<Database>): Promise<LaneBacklog[]> {
  const rows = await db
    .selectFrom('outbox')
    .select((eb) => ['kind', eb.fn.countAll().as('n'), eb.fn.min('created_at').as('oldest')])
    // every lane named: the count seeks in outbox_lane_due (kind, status, ...)
    .where('kind', 'in', OUTBOX_KINDS)
    .where('status', 'in', ['pending', 'sending'])
    .groupBy('kind')
    .execute();
  return rows.map((r) => ({ lane: r.kind, count: Number(r.n), oldest: r.oldest ?? null }));
}

export interface ActiveSessions {
  /** /auth/login and signup sessions, not ended, with a refresh token that can still be used. */
  readonly gateway: number;
  /** SMART app sessions, not revoked and before their end (their refresh tokens live in the oauth_store). */
  readonly smart: number;
}

export async function countActiveSessions(db: Kysely<Database>, now: Date): Promise<ActiveSessions> {
  const at = now.toISOString();
  const live = db
    .selectFrom('sessions as s')
    .where('s.revoked_at', 'is', null)
    .where('s.expires_at', '>', at);
  const [gateway, smart] = await Promise.all([
    live
      .where('s.client_id', 'is', null)
      .where(({ exists, selectFrom }) =>
        exists(
          selectFrom('refresh_tokens as r')
            .select('r.id')
            .whereRef('r.session_id', '=', 's.id')
            .where('r.used_at', 'is', null)
            .where('r.expires_at', '>', at),
        ),
      )
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow(),
    live
      .where('s.client_id', 'is not', null)
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow(),
  ]);
  return { gateway: Number(gateway.n), smart: Number(smart.n) };
}
