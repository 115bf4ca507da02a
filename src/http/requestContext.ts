import type { Context } from 'hono';
import type { AppEnv, RequestContext } from './types.js';

/** Who made this request (request id, client IP), for audit entries and the scoped FHIR access. */
export function requestContext(c: Context<AppEnv>): RequestContext {
  return { requestId: c.var.requestId, clientIp: c.var.clientIp };
}
