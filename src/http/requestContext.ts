import type { Context } from 'hono';
import type { AppEnv, RequestContext } from './types.js';

/** Who made this request (request id, client IP), for audit entries and the scoped FHIR access. */
export function requestContext(c: Context<AppEnv>): RequestContext {
  // c.get, not c.var: Hono builds a new object on every c.var access, and this runs on every request
  return { requestId: c.get('requestId'), clientIp: c.get('clientIp') };
}
