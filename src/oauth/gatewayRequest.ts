import type { IncomingMessage } from 'node:http';
import type { RequestContext } from '../http/types.js';

/**
 * oidc-provider answers on the Node request itself, outside Hono's context: the gateway's request
 * id and client IP (worked out by its middleware, trusted proxies considered) ride along on that
 * request, so what oidc-provider's hooks audit names the same request as the request log.
 */

type WithGatewayContext = IncomingMessage & { gatewayContext?: RequestContext };

export function attachRequestContext(req: IncomingMessage, ctx: RequestContext): void {
  (req as WithGatewayContext).gatewayContext = ctx;
}

export function requestContextOf(req: IncomingMessage | undefined): RequestContext | undefined {
  return (req as WithGatewayContext | undefined)?.gatewayContext;
}
