import type { MiddlewareHandler } from 'hono';
import { AppError } from '../errors.js';
import { isWellFormedQuery } from '../http/percentEncoding.js';
import { rawRequestTarget } from '../http/requestContext.js';
import type { AppEnv } from '../http/types.js';

function refused(message: string): AppError {
  return new AppError('validation_failed', { errors: [{ path: 'url', message }] });
}

/**
 * What no valid request target of this API holds is refused with 400 before any route runs:
 * - a NUL character: PostgreSQL cannot store or compare text holding one, and a filter, id or
 *   cursor carrying one failed as our own 500 there (SQLite answered), for anonymous OAuth
 *   requests too;
 * - a query that is not well-formed UTF-8 once decoded (RFC 3986 section 2.1; FHIR is UTF-8
 *   throughout): an admin's FHIR query goes upstream as it came (HAPI answered a lone surrogate
 *   with a 500), and everywhere else it would be read as U+FFFD.
 */
export function checkRequestTarget(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const target = rawRequestTarget(c);
    if (target.includes('%00') || target.includes('\0'))
      throw refused('must not contain a NUL character (%00)');
    const query = target.indexOf('?');
    if (query >= 0 && !isWellFormedQuery(target.slice(query + 1)))
      throw refused('the query must be UTF-8, with every % followed by two hex digits (%25 for % itself)');
    await next();
  };
}
