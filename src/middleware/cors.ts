import type { MiddlewareHandler } from 'hono';
import { cors } from 'hono/cors';
import type { AppEnv } from '../http/types.js';
import { answerHeaders, unwrittenNodeResponse } from './responseHeaders.js';

// the conditional headers and Prefer are what FHIR clients send (https://hl7.org/fhir/R4/http.html#cread)
const ALLOWED_REQUEST_HEADERS = [
  'Authorization',
  'Content-Type',
  'Idempotency-Key',
  'X-Request-Id',
  'If-Match',
  'If-None-Match',
  'If-Modified-Since',
  'If-None-Exist',
  'Prefer',
];
// what the guide tells a script to read: a replayed create, a missing SMART scope's challenge
const EXPOSED_HEADERS = [
  'X-Request-Id',
  'Retry-After',
  'Location',
  'ETag',
  'Last-Modified',
  'Idempotent-Replayed',
  'WWW-Authenticate',
];

/**
 * CORS for an exact-origin allow-list; no credentials mode: tokens travel in the Authorization
 * header. A route that `decidesOwnCors` answers its own preflights (the SMART token endpoint). Preflights are Hono's cors(); on other requests the same headers are set before the
 * route on the Node response, or after it in place (responseHeaders.ts: Hono's cors() would copy
 * every answer through a stream). No route sets Vary, so Origin is the whole of it.
 */
export function corsPolicy(
  origins: readonly string[],
  decidesOwnCors: (path: string) => boolean = () => false,
): MiddlewareHandler<AppEnv> {
  const allowed = (origin: string) => (origins.includes(origin) ? origin : null);
  const preflight = cors({
    origin: allowed,
    allowMethods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
    allowHeaders: ALLOWED_REQUEST_HEADERS,
    exposeHeaders: EXPOSED_HEADERS,
    maxAge: 600,
  });
  const exposed = EXPOSED_HEADERS.join(',');
  const setAfterRoute = (headers: Headers, origin: string | null) => {
    if (origin) headers.set('Access-Control-Allow-Origin', origin);
    headers.set('Access-Control-Expose-Headers', exposed);
    headers.append('Vary', 'Origin');
  };
  return (c, next) => {
    if (c.req.method === 'OPTIONS') {
      if (decidesOwnCors(c.req.path)) return next();
      // an origin not listed learns nothing of what the API takes: the preflight fails on the missing Allow-Origin anyway
      if (!allowed(c.req.header('origin') ?? '')) return Promise.resolve(c.body(null, 204));
      return preflight(c, next);
    }
    // no origin is allowed (CORS_ORIGINS empty): an answer needs none of the headers, nor Vary
    if (origins.length === 0) return next();
    const origin = allowed(c.req.header('origin') ?? '');
    const node = unwrittenNodeResponse(c);
    if (!node) return next().then(() => setAfterRoute(answerHeaders(c), origin));
    if (origin) node.setHeader('Access-Control-Allow-Origin', origin);
    node.setHeader('Access-Control-Expose-Headers', exposed);
    node.setHeader('Vary', 'Origin');
    return next();
  };
}
