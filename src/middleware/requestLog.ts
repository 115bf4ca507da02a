import type { Context, MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { toAppError } from '../http/errorHandler.js';
import type { AppEnv } from '../http/types.js';
import type { Logger } from '../logger.js';

/**
 * The pattern of the route that answered. Not simply the last one matched: `POST /fhir/patient`
 * also matches the passthrough's `/fhir/*` behind it. An app-wide middleware (pattern `*`) that
 * answered, such as a 415 or a preflight, is labelled with the route the request was for.
 */
function answeringRoute(c: Context<AppEnv>): string {
  const answered = routePath(c);
  return answered === '*' || answered === '/*' ? routePath(c, -1) : answered;
}

/**
 * One JSON line per request: id, method, route pattern, status, duration, and who asked (the
 * verified user, or the user of a refused but genuine token) and the error code when it failed
 * (Hono sets `c.error` when onError ran). Never the query string or body: they may hold codes,
 * tokens or search terms naming a patient. The same figures feed the request metrics.
 */
export function requestLog(logger: Logger): MiddlewareHandler<AppEnv> {
  // the line's fields are fixed below and hold no secret, so it skips the redaction pass (~10 µs a line)
  const lines = logger.child({}, { redact: [] });
  return async (c, next) => {
    const started = performance.now();
    await next();
    const durationMs = performance.now() - started;
    const route = answeringRoute(c);
    const code = c.error ? toAppError(c.error).code : undefined;
    // the request's one metrics call (src/metrics/): no allocation once its route and status were seen
    c.get('deps').metrics.request(c.req.method, route, c.res.status, durationMs, code);
    const userId = c.get('caller')?.userId ?? c.get('refusedUserId');
    lines.info(
      {
        req_id: c.get('requestId'),
        method: c.req.method,
        route,
        status: c.res.status,
        duration_ms: Math.round(durationMs * 10) / 10,
        ...(userId ? { user_id: userId } : {}),
        ...(code ? { code } : {}),
      },
      'request',
    );
  };
}
