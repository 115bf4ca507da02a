import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../http/types.js';
import { answerHeaders, unwrittenNodeResponse } from './responseHeaders.js';

/** Never sniffed, never framed, no referrer. Set before the route, a route's own value would win: none sets one. */
const FIXED = [
  ['X-Content-Type-Options', 'nosniff'],
  ['Referrer-Policy', 'no-referrer'],
  ['X-Frame-Options', 'DENY'],
] as const;

/**
 * API responses are never cached unless a route says so (they carry personal data and tokens),
 * never sniffed, never framed; nothing says which server or version answered (neither Node nor
 * Hono adds such a header, and no route or relayed upstream header does).
 */
export function securityHeaders(): MiddlewareHandler<AppEnv> {
  return (c, next) => {
    const node = unwrittenNodeResponse(c);
    if (!node) return next().then(() => setAfterRoute(answerHeaders(c)));
    // the route's own Cache-Control, when it has one, replaces this default
    node.setHeader('Cache-Control', 'no-store');
    for (const [name, value] of FIXED) node.setHeader(name, value);
    return next();
  };
}

function setAfterRoute(headers: Headers): void {
  if (!headers.has('Cache-Control')) headers.set('Cache-Control', 'no-store');
  for (const [name, value] of FIXED) headers.set(name, value);
  headers.delete('X-Powered-By');
  headers.delete('Server');
}
