import type { IncomingMessage } from 'node:http';
import type { Context } from 'hono';
import type { AppEnv, RequestContext } from './types.js';

/** Who made this request (request id, client IP), for audit entries and the scoped FHIR access. */
export function requestContext(c: Context<AppEnv>): RequestContext {
  // c.get, not c.var: Hono builds a new object on every c.var access, and this runs on every request
  return { requestId: c.get('requestId'), clientIp: c.get('clientIp') };
}

/** The request target (path and query) exactly as the client sent it, before any normalisation. */
export function rawRequestTarget(c: Context<AppEnv>): string {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (incoming?.url !== undefined) return incoming.url;
  // outside Node's HTTP server (app.request in tests)
  const url = new URL(c.req.url);
  return url.pathname + url.search;
}
