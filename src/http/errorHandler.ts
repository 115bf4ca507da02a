import type { Context, ErrorHandler, NotFoundHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { TrieRouter } from 'hono/router/trie-router';
import { isDatabaseWait } from '../../db/connection.js';
import { recordErrorResponse, type TokenHolder, wantsTokenHolder } from '../audit/requestAudit.js';
import { AppError, type ErrorCode, toOperationOutcome, toProblem } from '../errors.js';
import { tokenHolder } from '../middleware/authenticate.js';
import { FHIR_JSON } from './fhirJson.js';
import { isFhirPath } from './fhirPaths.js';
import type { AppEnv } from './types.js';

const CODE_BY_HTTP_STATUS: Readonly<Record<number, ErrorCode>> = {
  400: 'invalid_json',
  401: 'unauthenticated',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
};

/** Any thrown value as the AppError it is answered with. */
export function toAppError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  if (error instanceof HTTPException) {
    return new AppError(CODE_BY_HTTP_STATUS[error.status] ?? 'internal_error', { cause: error });
  }
  // a database held by another writer past the lock timeout, or one that cannot be reached or stopped
  // answering, is a service unavailable for now, not a bug: retry later
  if (isDatabaseWait(error))
    return new AppError('storage_unavailable', { cause: error, headers: { 'Retry-After': '2' } });
  return new AppError('internal_error', { cause: error });
}

/** Renders an AppError in the format the path speaks. */
export function renderError(c: Context<AppEnv>, error: AppError): Response {
  // FHIR requests answer OperationOutcome; everything else RFC 9457
  const fhir = isFhirPath(c.req.path, c.req.method);
  const body = fhir ? toOperationOutcome(error) : toProblem(error);
  const headers: Record<string, string> = {
    'Content-Type': fhir ? FHIR_JSON : 'application/problem+json',
    ...error.headers,
  };
  return new Response(JSON.stringify(body), { status: error.status, headers });
}

/**
 * Every error ends here. Expected ones (AppError) are rendered as they are; anything else is
 * logged with the request id and answered with a generic 500 — no stack, SQL or upstream URL.
 * The refusal is audited (requestAudit.ts) unless the code that refused it already did.
 */
export const onError: ErrorHandler<AppEnv> = async (error, c) => {
  const appError = toAppError(error);
  const logger = c.var.deps?.logger;
  const log = { req_id: c.var.requestId, code: appError.code, err: appError.cause ?? error };
  // a bug of ours is an error; a FHIR server or database that failed (502-504) is a warning: it is
  // expected in operation, and an alert on every error-level line must not page for each one
  if (appError.status === 500) logger?.error(log, 'request failed');
  // its FHIR call was ended by our own stop (fhirService's close): no dependency failed
  else if (appError.code === 'not_ready')
    logger?.info({ req_id: c.var.requestId }, 'request ended by the shutdown');
  else if (appError.status > 500) logger?.warn(log, 'request failed: a dependency');
  else if (appError.cause) logger?.debug(log, 'request refused');
  try {
    recordErrorResponse(c, appError, error, await holderOf(c, error));
  } catch (auditError) {
    // the answer does not depend on the audit; the log line names the request instead
    logger?.error({ req_id: c.var.requestId, err: auditError }, 'could not audit a refused request');
  }
  return renderError(c, appError);
};

/** The holder of a refused request's token, when it was refused before authenticate ran (requestAudit.ts). */
async function holderOf(c: Context<AppEnv>, thrown: unknown): Promise<TokenHolder | undefined> {
  return wantsTokenHolder(c, thrown) ? tokenHolder(c) : undefined;
}

const ROUTE_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

/**
 * The answer when no route matched: 405 with `Allow` when the path exists under other methods
 * (`GET /auth/login`), else 404 — so a frontend developer learns which of the two was wrong.
 * Built from the app's routes once they are all registered.
 */
export function onNotFound(routes: readonly { method: string; path: string }[]): NotFoundHandler<AppEnv> {
  const router = new TrieRouter<string>();
  for (const { method, path } of routes)
    if ((ROUTE_METHODS as readonly string[]).includes(method)) router.add(method, path, method);
  const allowedFor = (path: string) => ROUTE_METHODS.filter((m) => router.match(m, path)[0].length > 0);
  return async (c) => {
    const allowed = allowedFor(c.req.path);
    const refused =
      allowed.length > 0
        ? new AppError('method_not_allowed', { headers: { Allow: allowed.join(', ') } })
        : new AppError('not_found');
    // the request log line and metrics read the error code from here, as after onError
    c.error = refused;
    // probing admin routes that do not exist is a refusal at an admin route: audited too
    try {
      recordErrorResponse(c, refused, refused, await holderOf(c, refused));
    } catch (auditError) {
      c.var.deps?.logger.error(
        { req_id: c.var.requestId, err: auditError },
        'could not audit a refused request',
      );
    }
    return renderError(c, refused);
  };
}
