import type { Kysely } from 'kysely';
import { deleteInChunks } from '../db/chunkedDeletes.js';
import type { Database } from '../db/schema.js';
import { auditInterruptedWrites } from './audit/openWrites.js';
import { purgeOldWindows } from './auth/rateLimiter.js';
import type { Clock } from './clock.js';
import { DELIVERED_RETENTION_MS, purgeDeliveredOutboxRows } from './email/outbox.js';
import { uuidv7Floor } from './ids.js';
import type { Logger } from './logger.js';

const EVERY_MS = 10 * 60_000;
/** The first sweep, soon after start: restarts more often than EVERY_MS must not keep it from ever running. */
const FIRST_AFTER_MS = 60_000;

/** What the sweep needs to know of the configuration. */
export interface SweepOptions {
  /** REFRESH_TOKEN_TTL: a refresh token expires at most this long after it was made. */
  readonly refreshTokenTtlSeconds: number;
  /** Asked between two statements of a long purge: a stopping process leaves the rest. */
  readonly stopped?: () => boolean;
}

/** How long an ended session is kept: its refresh attempts are audited as `expired`, not `invalid`, for a day. */
const ENDED_SESSION_RETENTION_MS = 86_400_000;

/**
 * Deletes what has no use any more: ended rate-limit windows, expired idempotency keys and
 * refresh tokens, sessions a day after they ended, outbox rows delivered a week ago. And audits
 * the passthrough writes a stopped process left unaudited.
 */
export async function sweep(
  db: Kysely<Database>,
  clock: Clock,
  logger: Logger,
  options: SweepOptions,
): Promise<void> {
  const { stopped } = options;
  await auditInterruptedWrites(db, clock, logger);
  const nowMs = clock.now().getTime();
  const now = new Date(nowMs).toISOString();
  await purgeOldWindows(db, clock);
  await db.deleteFrom('idempotency_keys').where('expires_at', '<', now).execute();
  // SMART codes, tokens and sessions (src/oauth/adapter.ts) are useless once expired
  await db.deleteFrom('oauth_store').where('expires_at', '<', now).execute();
  await deleteExpiredRefreshTokens(db, nowMs, options.refreshTokenTtlSeconds, stopped);
  await deleteEndedSessions(db, nowMs - ENDED_SESSION_RETENTION_MS, stopped);
  await purgeDeliveredOutboxRows(db, new Date(nowMs - DELIVERED_RETENTION_MS).toISOString(), stopped);
}

/**
 * Refresh tokens past their expiry. One is made with a UUIDv7 id and expires within the TTL, so
 * the expired ones are among the ids made a TTL ago: the statement reads those by the primary
 * key, not the whole table (an index on the expiry would cost every login and refresh a page).
 * After REFRESH_TOKEN_TTL is raised, tokens made under the old TTL go up to the new one later.
 */
function deleteExpiredRefreshTokens(
  db: Kysely<Database>,
  nowMs: number,
  ttlSeconds: number,
  stopped?: () => boolean,
): Promise<number> {
  const madeBefore = uuidv7Floor(nowMs - ttlSeconds * 1000);
  const now = new Date(nowMs).toISOString();
  return deleteInChunks(
    db,
    'refresh_tokens',
    (ids) => ids.where('id', '<', madeBefore).where('expires_at', '<', now),
    stopped,
  );
}

/**
 * Sessions that ended before `endedBefore`, and their refresh tokens: a session past its end
 * authorises nothing (authenticate.ts checks the end on every request).
 */
async function deleteEndedSessions(
  db: Kysely<Database>,
  endedBefore: number,
  stopped?: () => boolean,
): Promise<number> {
  const before = new Date(endedBefore).toISOString();
  // their refresh tokens first, in chunks of their own: a session refreshed every 15 minutes has
  // hundreds, and cascading from 500 sessions at once held the lock and the event loop ~0.9 s
  await deleteInChunks(
    db,
    'refresh_tokens',
    (ids) =>
      ids.where('session_id', 'in', (eb) =>
        eb.selectFrom('sessions').select('id').where('expires_at', '<', before),
      ),
    stopped,
  );
  return deleteInChunks(db, 'sessions', (ids) => ids.where('expires_at', '<', before), stopped);
}

/** Runs `sweep` a minute after start, then every 10 minutes; returns the stop function. */
export function startHousekeeping(
  db: Kysely<Database>,
  clock: Clock,
  logger: Logger,
  options: Omit<SweepOptions, 'stopped'>,
  firstAfterMs = FIRST_AFTER_MS,
): () => Promise<void> {
  let running: Promise<void> | undefined;
  let stopping = false;
  const run = () => {
    running ??= sweep(db, clock, logger, { ...options, stopped: () => stopping })
      .catch((error: unknown) => logger.warn({ err: error }, 'housekeeping failed'))
      .finally(() => {
        running = undefined;
      });
  };
  const first = setTimeout(run, firstAfterMs);
  const timer = setInterval(run, EVERY_MS);
  first.unref();
  timer.unref();
  return async () => {
    stopping = true;
    clearTimeout(first);
    clearInterval(timer);
    await running;
  };
}
