import type { MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { toAppError } from '../http/errorHandler.js';
import type { AppEnv } from '../http/types.js';
import type { Logger } from '../logger.js';

/**
 * One JSON line per request: id, method, route pattern, status, duration, and who asked (the
 * verified user, or the user of a refused but genuine token) and the error code when it failed
 * (Hono sets `c.error` when onError ran). Never the query string or body: they may hold codes,
 * tokens or search terms naming a patient.
 */
export function requestLog(logger: Logger): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const started = performance.now();
    await next();
    const userId = c.var.caller?.userId ?? c.var.refusedUserId;
    logger.info(
      {
        req_id: c.var.requestId,
        method: c.req.method,
        route: routePath(c, -1),
        status: c.res.status,
        duration_ms: Math.round((performance.now() - started) * 10) / 10,
        ...(userId ? { user_id: userId } : {}),
        ...(c.error ? { code: toAppError(c.error).code } : {}),
      },
      'request',
    );
  };
}
