import type { Context } from 'hono';
import { matchedRoutes } from 'hono/route';
import type { AuditOutcome } from '../../db/schema.js';
import type { AppError } from '../errors.js';
import { upstreamRefusalOf } from '../fhir/upstreamStatus.js';
import { isFhirPath } from '../http/fhirPaths.js';
import { FHIR_ID_PATTERN } from '../http/schemas.js';
import type { AppEnv, Caller } from '../http/types.js';
import type { AuditEvent } from './auditService.js';

/**
 * The audit of refused and failed requests (ASVS 7.1–7.2, HIPAA 164.312(b)): every error
 * response of a known caller, of an admin route or of a login or signup is recorded once —
 * by the code that refused it when that code audits itself (and marks the error), else by
 * onError through `recordErrorResponse`. The entry holds the actor, the route pattern, the
 * FHIR type and id of the path and the error code: never a query value, body, code or token.
 */

declare module 'hono' {
  interface ContextVariableMap {
    /** The user a refused token belongs to, when its signature was good (set by authenticate, for the log line). */
    refusedUserId: string | undefined;
  }
}

const AUDITED = Symbol('fhir-facade.audited');

/** Marks an error whose refusal was just audited where it was thrown, so onError does not record it twice. */
export function auditedError<E extends Error>(error: E): E {
  Object.defineProperty(error, AUDITED, { value: true });
  return error;
}

export function wasAudited(error: unknown): boolean {
  return typeof error === 'object' && error !== null && AUDITED in error;
}

function upstreamCaused(error: AppError): boolean {
  return error.code.startsWith('upstream_') || upstreamRefusalOf(error) !== undefined;
}

/** `failed` when the gateway or the FHIR server could not do it (5xx, an upstream refusal), else `denied`. */
export function refusalOutcome(error: AppError): Exclude<AuditOutcome, 'success'> {
  return error.status >= 500 || upstreamCaused(error) ? 'failed' : 'denied';
}

const PROVISIONING_PATHS = new Set([
  '/fhir/patient',
  '/fhir/practitioner',
  '/fhir/Patient',
  '/fhir/Practitioner',
]);
// anonymous credential routes: every refusal of them is an auth event, audited without a caller
const CREDENTIAL_ACTIONS: Readonly<Record<string, string>> = {
  '/auth/login': 'auth.login',
  '/auth/signup': 'auth.signup',
  '/auth/refresh': 'auth.refresh',
  '/auth/password/forgot': 'auth.password_forgot',
  '/auth/password/reset': 'auth.password_reset',
  '/auth/password/change': 'auth.password_change',
  '/auth/access-code/resend': 'auth.access_code_resend',
  '/auth/logout': 'auth.logout',
};
const FHIR_TYPE = /^[A-Z][A-Za-z]{1,63}$/;
/** The audit action of a FHIR write, by its method (a batch's or an operation's by its kind). */
export const WRITE_ACTIONS: Readonly<Record<string, string>> = {
  POST: 'fhir.create',
  PUT: 'fhir.update',
  PATCH: 'fhir.patch',
  DELETE: 'fhir.delete',
};

/** Routes whose refusals are audited even without a verified caller. */
function auditedAnonymously(method: string, path: string): boolean {
  if (path.startsWith('/admin/')) return true;
  return method === 'POST' && (PROVISIONING_PATHS.has(path) || Object.hasOwn(CREDENTIAL_ACTIONS, path));
}

/** The FHIR interaction a /fhir path and method ask for, from the path's shape alone. */
export function fhirAction(method: string, segments: readonly string[]): string {
  if (segments.some((s) => s.startsWith('$'))) return 'fhir.operation';
  if (segments[1] === '_search') return 'fhir.search';
  if (method !== 'GET' && method !== 'HEAD') {
    if (segments.length === 0 && method === 'POST') return 'fhir.batch';
    return WRITE_ACTIONS[method] ?? 'fhir.request';
  }
  // a type, or a compartment (Patient/1/Observation): a search; an instance, version or history: a read
  const compartment = segments.length === 3 && segments[2] !== '_history';
  return segments.length <= 1 || compartment ? 'fhir.search' : 'fhir.read';
}

interface Described {
  readonly action: string;
  readonly target: Pick<AuditEvent, 'targetFhirType' | 'targetFhirId' | 'targetUserId'>;
}

/** What a request was trying to do, from its method and path (ids only, never the query). */
function describeRequest(method: string, path: string): Described {
  if (method === 'POST' && PROVISIONING_PATHS.has(path)) {
    const type = path.toLowerCase() === '/fhir/patient' ? 'Patient' : 'Practitioner';
    return { action: 'provisioning.create', target: { targetFhirType: type } };
  }
  const credential = method === 'POST' ? CREDENTIAL_ACTIONS[path] : undefined;
  if (credential) return { action: credential, target: {} };
  if (isFhirPath(path, method)) {
    const segments = path.slice('/fhir/'.length).split('/').filter(Boolean);
    const [type, id] = segments;
    return {
      action: fhirAction(method, segments),
      target: {
        ...(type && FHIR_TYPE.test(type) ? { targetFhirType: type } : {}),
        ...(id && FHIR_ID_PATTERN.test(id) ? { targetFhirId: id } : {}),
      },
    };
  }
  const user = /^\/admin\/users\/([A-Za-z0-9\-.]{1,64})(?:\/|$)/.exec(path)?.[1];
  return { action: 'api.request', target: user ? { targetUserId: user } : {} };
}

function routeOf(c: Context<AppEnv>): string {
  try {
    const routes = matchedRoutes(c);
    // the route registered for this method (POST /fhir/patient) over a catch-all that matched too (/fhir/*)
    const own = routes.find((route) => route.method === c.req.method);
    return (own ?? routes.at(-1))?.path ?? '(none)';
  } catch {
    return '(none)';
  }
}

/** The account a refused request's token names (src/middleware/authenticate.ts tokenHolder). */
export interface TokenHolder {
  readonly userId: string;
  readonly role: string;
}

/**
 * Whether a refused request should have its token's holder looked up for its audit entry: it was
 * refused before `authenticate` ran (no caller), not audited already, and not at a credential
 * route (a login refused names the account it tried, not the bearer of some other token).
 */
export function wantsTokenHolder(c: Context<AppEnv>, thrown: unknown): boolean {
  return (
    c.var.deps !== undefined &&
    c.var.caller === undefined &&
    !wasAudited(thrown) &&
    !Object.hasOwn(CREDENTIAL_ACTIONS, c.req.path) &&
    c.req.header('authorization') !== undefined
  );
}

/**
 * Records the error response of a request (called by onError), unless the code that refused it
 * already did and marked the error (auditedError). The entry goes to the batched trail.
 * `holder`: a request refused before `authenticate` ran is recorded as its token's holder's when
 * the token verifies (wantsTokenHolder; onError checks it before answering: a cache hit, else
 * one signature check).
 */
export function recordErrorResponse(
  c: Context<AppEnv>,
  error: AppError,
  thrown: unknown,
  holder?: TokenHolder,
): void {
  const deps = c.var.deps;
  if (!deps || wasAudited(thrown)) return;
  const caller: TokenHolder | undefined = (c.var.caller as Caller | undefined) ?? holder;
  const method = c.req.method;
  const path = c.req.path;
  if (!caller && !auditedAnonymously(method, path)) return;
  const { action, target } = describeRequest(method, path);
  const at = deps.clock.now();
  const event: AuditEvent = {
    action,
    outcome: refusalOutcome(error),
    errorCode: error.code,
    actorUserId: caller?.userId ?? null,
    actorRole: caller?.role ?? null,
    ...target,
    requestId: c.var.requestId,
    clientIp: c.var.clientIp,
    detail: { method, route: routeOf(c), status: error.status },
  };
  deps.auditTrail.record(event, at);
}
