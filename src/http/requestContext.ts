import type { IncomingMessage } from 'node:http';
import type { Context } from 'hono';
import type { AppEnv, RequestContext } from './types.js';

/** Who made this request (request id, client IP), for audit entries and the scoped FHIR access. */
export function requestContext(c: Context<AppEnv>): RequestContext {
  // c.get, not c.var: Hono builds a new object on every c.var access, and this runs on every request
  return { requestId: c.get('requestId'), clientIp: c.get('clientIp') };
}

/** The request target (path and query) exactly as the client sent it, before any normalisation. */
/**
 * A request target in absolute form (`GET http://host/fhir/Patient/1`, RFC 9112 section 3.2.2,
 * which servers must accept) as the path and query it names; the host part is not used.
 */
function originForm(target: string): string {
  if (target.startsWith('/')) return target;
  const authority = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(target);
  if (!authority) return target;
  const rest = target.slice(authority[0].length);
  return rest.startsWith('/') ? rest : `/${rest}`;
}

export function rawRequestTarget(c: Context<AppEnv>): string {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (incoming?.url !== undefined) return originForm(incoming.url);
  // outside Node's HTTP server (app.request in tests)
  const url = new URL(c.req.url);
  return url.pathname + url.search;
}
