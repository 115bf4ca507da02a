import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../http/types.js';

/** Probes and metrics answer at once: a slow audit writer must not get a healthy process restarted. */
const NEVER_WAIT = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * A request is handled once the audit trail has room for more (auditTrail.ts, MAX_UNWRITTEN): a
 * trail writing slower than the requests record slows the requests down, instead of holding ever
 * more unwritten audit rows in memory, each lost to a crash. Before the route, so a request waits
 * before it builds anything, and an OAuth route that writes its own answer waits too. Inside the
 * request log, so its duration counts the wait.
 */
export function auditBackpressure(): MiddlewareHandler<AppEnv> {
  // not async: a request with room (nearly all) pays no promise of its own here
  return (c, next) => {
    const room = c.get('deps').auditTrail.room();
    return room && !NEVER_WAIT.has(c.req.path) ? room.then(next) : next();
  };
}
