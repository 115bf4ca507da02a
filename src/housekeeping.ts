import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { auditInterruptedWrites } from './audit/openWrites.js';
import { purgeOldWindows } from './auth/rateLimiter.js';
import type { Clock } from './clock.js';
import { DELIVERED_RETENTION_MS, purgeDeliveredOutboxRows } from './email/outbox.js';
import type { Logger } from './logger.js';

const EVERY_MS = 10 * 60_000;
/** The first sweep, soon after start: restarts more often than EVERY_MS must not keep it from ever running. */
const FIRST_AFTER_MS = 60_000;

/**
 * Deletes what has no use any more: ended rate-limit windows, expired idempotency keys, ended
 * sessions' tokens, outbox rows delivered a week ago. And audits the passthrough writes a
 * stopped process left unaudited.
 */
export async function sweep(
  db: Kysely<Database>,
  clock: Clock,
  logger: Logger,
  stopped: () => boolean = () => false,
): Promise<void> {
  await auditInterruptedWrites(db, clock, logger);
  const now = clock.now().toISOString();
  await purgeOldWindows(db, clock);
  await db.deleteFrom('idempotency_keys').where('expires_at', '<', now).execute();
  await db.deleteFrom('refresh_tokens').where('expires_at', '<', now).execute();
  // SMART codes, tokens and sessions (src/oauth/adapter.ts) are useless once expired
  await db.deleteFrom('oauth_store').where('expires_at', '<', now).execute();
  const deliveredBefore = new Date(clock.now().getTime() - DELIVERED_RETENTION_MS).toISOString();
  await purgeDeliveredOutboxRows(db, deliveredBefore, stopped);
}

/** Runs `sweep` a minute after start, then every 10 minutes; returns the stop function. */
export function startHousekeeping(
  db: Kysely<Database>,
  clock: Clock,
  logger: Logger,
  firstAfterMs = FIRST_AFTER_MS,
): () => Promise<void> {
  let running: Promise<void> | undefined;
  let stopping = false;
  const run = () => {
    running ??= sweep(db, clock, logger, () => stopping)
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
