import type { MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import type { AppEnv } from '../http/types.js';
import type { Logger } from '../logger.js';

/**
 * One JSON line per request: id, method, route pattern, status, duration. Never the query
 * string or body: they may hold codes, tokens or search terms naming a patient.
 */
export function requestLog(logger: Logger): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const started = performance.now();
    await next();
    logger.info(
      {
        req_id: c.var.requestId,
        method: c.req.method,
        route: routePath(c, -1),
        status: c.res.status,
        duration_ms: Math.round((performance.now() - started) * 10) / 10,
      },
      'request',
    );
  };
}
