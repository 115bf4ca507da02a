import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../http/types.js';
import { answerHeaders } from './responseHeaders.js';

/**
 * API responses are never cached unless a route says so (they carry personal data and tokens),
 * never sniffed, never framed; nothing says which server or version answered.
 */
export function securityHeaders(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await next();
    const headers = answerHeaders(c);
    if (!headers.has('Cache-Control')) headers.set('Cache-Control', 'no-store');
    headers.set('X-Content-Type-Options', 'nosniff');
    headers.set('Referrer-Policy', 'no-referrer');
    headers.set('X-Frame-Options', 'DENY');
    headers.delete('X-Powered-By');
    headers.delete('Server');
  };
}
