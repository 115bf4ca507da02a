import type { MiddlewareHandler } from 'hono';
import { AppError } from '../errors.js';
import { rawRequestTarget } from '../http/requestContext.js';
import type { AppEnv } from '../http/types.js';

/**
 * A NUL character anywhere in the request target is refused with 400 before any route runs.
 * PostgreSQL cannot store or compare text holding NUL: a filter, id or cursor carrying one failed
 * as our own 500 there (SQLite answered), for anonymous OAuth requests too. No valid value of
 * this API contains one.
 */
export function refuseNul(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const target = rawRequestTarget(c);
    if (target.includes('%00') || target.includes('\0'))
      throw new AppError('validation_failed', {
        errors: [{ path: 'url', message: 'must not contain a NUL character (%00)' }],
      });
    await next();
  };
}
