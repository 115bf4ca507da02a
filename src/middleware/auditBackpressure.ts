import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../http/types.js';

/**
 * A request is answered once the audit trail has room for more (auditTrail.ts, MAX_UNWRITTEN): a
 * trail writing slower than the requests record slows the requests down, instead of holding ever
 * more unwritten audit rows in memory, each lost to a crash. Inside the request log, so its
 * duration counts the wait.
 */
export function auditBackpressure(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await next();
    const room = c.get('deps').auditTrail.room();
    if (room) await room;
  };
}
