import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../http/types.js';

/**
 * API responses are never cached unless a route says so (they carry personal data and tokens),
 * never sniffed, never framed; nothing says which server or version answered.
 */
export function securityHeaders(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await next();
    if (!c.res.headers.has('Cache-Control')) c.header('Cache-Control', 'no-store');
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('Referrer-Policy', 'no-referrer');
    c.header('X-Frame-Options', 'DENY');
    c.res.headers.delete('X-Powered-By');
    c.res.headers.delete('Server');
  };
}
