import type { Logger } from './logger.js';

/**
 * Short leases renewed while work runs (a heartbeat): a crashed process's claim lapses within
 * seconds, while a live one keeps its claim however long its work takes. Used by provisioning
 * intents and idempotency keys, and by the outbox lanes. Every claim carries a fencing token
 * (a counter bumped on each claim), so work whose lease was taken over cannot commit.
 */

/** How long a claim lasts without renewal. */
export const LEASE_MS = 6_000;
/** How often a live claim is renewed: well inside the lease, so one missed beat does not lose it. */
const HEARTBEAT_MS = 2_000;

export interface Heartbeat {
  /** Stops renewing; resolves once a renewal in flight has finished. */
  stop(): Promise<void>;
  /** False once a renewal found the claim taken over (the work must not commit). */
  readonly held: () => boolean;
}

/** Calls `renew` every HEARTBEAT_MS until stopped; `renew` answers whether the claim is still ours. */
export function heartbeat(renew: () => Promise<boolean>, logger: Logger, everyMs = HEARTBEAT_MS): Heartbeat {
  let held = true;
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (running) return;
    running = renew()
      .then((ok) => {
        if (!ok) {
          held = false;
          clearInterval(timer);
        }
      })
      .catch((error: unknown) => logger.warn({ err: error }, 'lease renewal failed'))
      .finally(() => {
        running = undefined;
      });
  }, everyMs);
  timer.unref();
  return {
    held: () => held,
    stop: async () => {
      clearInterval(timer);
      await running;
    },
  };
}

/** now + ms as ISO-8601. */
export function isoAfter(now: Date, ms: number): string {
  return new Date(now.getTime() + ms).toISOString();
}
