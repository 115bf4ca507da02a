import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context, MiddlewareHandler } from 'hono';
import type { AppEnv } from '../http/types.js';

function socketAddress(c: Context<AppEnv>): string | null {
  try {
    return getConnInfo(c).remote.address ?? null;
  } catch {
    return null; // app.request() in tests has no socket
  }
}

/**
 * The client address for audit and rate limits. X-Forwarded-For is believed only when
 * TRUST_PROXY is set, and then only its last hop (the one our proxy appended): earlier entries
 * are whatever the client wrote.
 */
export function clientIp(trustProxy: boolean): MiddlewareHandler<AppEnv> {
  return (c, next) => {
    let ip = socketAddress(c);
    if (trustProxy) {
      const hops = (c.req.header('x-forwarded-for') ?? '')
        .split(',')
        .map((h) => h.trim())
        .filter(Boolean);
      ip = hops.at(-1) ?? ip;
    }
    c.set('clientIp', ip);
    return next();
  };
}
