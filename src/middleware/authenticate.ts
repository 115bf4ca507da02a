import type { Context, MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { type AuditEvent, writeAudit } from '../audit/auditService.js';
import { auditedError, type TokenHolder } from '../audit/requestAudit.js';
import {
  type AccessTokenClaims,
  CLOCK_SKEW_SECONDS,
  type TokenCheck,
  type TokenRefusal,
  tokenSettingsOf,
  verifyAccessToken,
} from '../auth/tokens.js';
import { AppError } from '../errors.js';
import type { AppDeps, AppEnv, Caller } from '../http/types.js';
import { acceptsSmartToken, smartClientOf, verifySmartAccessToken } from '../oauth/smartTokens.js';
import { canSignIn } from '../users/accountStatus.js';
import { findCaller } from '../users/userRepository.js';

// the scheme is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` too (the token's classes hold both cases anyway)
const BEARER = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/i;

/** RFC 6750 challenge; the same for every failure so it does not tell an attacker why. */
const BEARER_CHALLENGE = 'Bearer realm="fhir-facade", error="invalid_token"';
/** A request that sent no credentials is told what to send, without an error code (RFC 6750 section 3.1). */
const BEARER_ASKED = 'Bearer realm="fhir-facade"';

/** Why a request was not authenticated: recorded in the audit, never told to the client. */
export type AuthFailure =
  | 'missing'
  /** Credentials of another scheme (`Basic ...`): no bearer token was sent. */
  | 'not_bearer'
  | TokenRefusal
  | 'unknown_user'
  | 'inactive_user'
  | 'revoked_token'
  | 'revoked_session'
  | 'inactive_app';

interface Refused {
  readonly reason: AuthFailure;
  /** The token's user, when the token itself was genuine. */
  readonly userId?: string | undefined;
  readonly role?: string | undefined;
}

/**
 * Requires a valid access token in the Authorization header (never a query parameter: URLs
 * end up in logs and browser history). Besides the signature and claims, the user must still
 * exist, be registered and active, and have the token's token_version, and the token's session
 * must be live — so deactivation, password reset and logout refuse older tokens on their very
 * next request. Every refusal is audited with its reason (never the token): on admin routes
 * (`auditFailures`) at once and mirrored as an AuditEvent, elsewhere through the batched trail.
 */
export function authenticate(options: { auditFailures?: boolean } = {}): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const verified = await verifyCaller(c);
    if ('reason' in verified) {
      await auditRefusal(c, verified, options.auditFailures === true);
      throw auditedError(
        new AppError('unauthenticated', {
          headers: { 'WWW-Authenticate': sentNoBearer(verified.reason) ? BEARER_ASKED : BEARER_CHALLENGE },
        }),
      );
    }
    c.set('caller', verified);
    await next();
  };
}

/** No bearer token at all: RFC 6750 section 3.1 asks for one without an error code. */
const sentNoBearer = (reason: AuthFailure) => reason === 'missing' || reason === 'not_bearer';

async function verifyCaller(c: Context<AppEnv>): Promise<Caller | Refused> {
  const header = c.req.header('authorization');
  if (!header) return { reason: 'missing' };
  if (!/^bearer\s/i.test(header)) return { reason: 'not_bearer' };
  const match = BEARER.exec(header);
  if (!match?.[1]) return { reason: 'invalid' };
  const deps = c.get('deps');
  const token = match[1];
  const now = deps.clock.now();
  const smartAccepted = acceptsSmartToken(c.req.path, c.req.method);
  let claims = verifiedSignature(deps, token, now, smartAccepted);
  if (!claims) {
    const checked = await verifiedAfresh(deps, token, now, smartAccepted);
    if (!checked.ok) return { reason: checked.reason, userId: checked.subject };
    claims = checked.claims;
  }
  const user = await findCaller(deps.db, claims.sub, claims.sid, deps.lookups);
  if (!user) return { reason: 'unknown_user' };
  const refused = (reason: AuthFailure): Refused => ({ reason, userId: user.id, role: user.role });
  if (!canSignIn(user)) return refused('inactive_user');
  // a password reset or deactivation bumps token_version; a role change makes the token's role stale
  if (user.token_version !== claims.ver || user.role !== claims.role) return refused('revoked_token');
  // logout and refresh-token reuse revoke the session, and with it every access token it issued
  const sessionLive =
    user.session_user_id === claims.sub &&
    !user.session_revoked_at &&
    (user.session_expires_at ?? '') > deps.clock.now().toISOString();
  if (!sessionLive) return refused('revoked_session');
  const clientId = smartClientOf(claims);
  if (clientId && !(await deps.appStatus.active(clientId))) return refused('inactive_app');
  return { userId: user.id, role: user.role, fhirId: user.fhir_resource_id, claims };
}

/** A token not in the cache of verified tokens: its signature and claims checked, and kept when good. */
async function verifiedAfresh(
  deps: AppDeps,
  token: string,
  now: Date,
  smartAccepted: boolean,
): Promise<TokenCheck> {
  let checked = await verifyAccessToken(deps.tokenKeys, tokenSettingsOf(deps.config.jwt), token, now);
  let smart = false;
  // a SMART app's token (issuer /oauth, audience the FHIR base) is valid only at /fhir and logout (src/oauth/smartTokens.ts)
  if (!checked.ok && checked.reason === 'invalid' && smartAccepted) {
    checked = await verifySmartAccessToken(deps, token, now);
    smart = true;
  }
  if (checked.ok) rememberSignature(deps, token, checked.claims, smart);
  return checked;
}

/**
 * Who a request's bearer token names when its signature and time claims verify, for the audit
 * of a request refused before `authenticate` ran (a 413, 415, 404 or 405 of the app-wide
 * middleware): nothing is looked up, so the account is named as the token names it, revoked or not.
 */
export async function tokenHolder(c: Context<AppEnv>): Promise<TokenHolder | undefined> {
  const header = c.req.header('authorization');
  const token = header ? BEARER.exec(header)?.[1] : undefined;
  if (!token) return undefined;
  const deps = c.get('deps');
  const now = deps.clock.now();
  const smartAccepted = acceptsSmartToken(c.req.path, c.req.method);
  const cached = verifiedSignature(deps, token, now, smartAccepted);
  const checked = cached
    ? { ok: true as const, claims: cached }
    : await verifiedAfresh(deps, token, now, smartAccepted);
  return checked.ok ? { userId: checked.claims.sub, role: checked.claims.role } : undefined;
}

/** A token whose signature and claims were verified: reused until its time claims end. */
interface Verified {
  readonly claims: AccessTokenClaims;
  /** A SMART app's token: accepted only where acceptsSmartToken says. */
  readonly smart: boolean;
  /** The time claims, with the tolerated skew, in ms: outside them the token is verified afresh (and refused). */
  readonly notBefore: number;
  readonly notAfter: number;
}

/** Most verified tokens kept per gateway: ~300 bytes each. */
const VERIFIED_TOKENS = 10_000;
// per app (its deps), never shared between apps
const verifiedTokens = new WeakMap<AppDeps, Map<string, Verified>>();

/**
 * The signature check (ES256 through WebCrypto) was the largest cost of an authenticated
 * request. A token's signature and fixed claims never change, so a verified token is kept until
 * its time claims end; revocation does not depend on it: the account, its token_version and the
 * session are read on every request (below).
 */
function verifiedSignature(
  deps: AppDeps,
  token: string,
  now: Date,
  smartAccepted: boolean,
): AccessTokenClaims | undefined {
  const cache = verifiedTokens.get(deps);
  const hit = cache?.get(token);
  if (!hit) return undefined;
  const at = now.getTime();
  if (at < hit.notBefore || at > hit.notAfter || (hit.smart && !smartAccepted)) {
    cache?.delete(token);
    return undefined;
  }
  return hit.claims;
}

function rememberSignature(deps: AppDeps, token: string, claims: AccessTokenClaims, smart: boolean): void {
  let cache = verifiedTokens.get(deps);
  if (!cache) {
    cache = new Map();
    verifiedTokens.set(deps, cache);
  }
  if (cache.size >= VERIFIED_TOKENS) cache.delete(cache.keys().next().value as string);
  const skew = CLOCK_SKEW_SECONDS * 1000;
  const maxAge = deps.config.jwt.accessTokenTtlSeconds * 1000;
  const stated: unknown = (claims as { nbf?: unknown }).nbf;
  const nbf = typeof stated === 'number' ? stated : claims.iat;
  cache.set(token, {
    claims,
    smart,
    notBefore: Math.max(claims.iat, nbf) * 1000 - skew,
    notAfter: Math.min(claims.exp * 1000 + skew, claims.iat * 1000 + maxAge + skew),
  });
}

/** Admin routes write at once (and mirror, as before); other routes' token failures go to the batched trail. */
async function auditRefusal(c: Context<AppEnv>, refused: Refused, immediately: boolean): Promise<void> {
  const deps = c.get('deps');
  c.set('refusedUserId', refused.userId);
  const event: AuditEvent = {
    action: 'access.denied',
    outcome: 'denied',
    errorCode: 'unauthenticated',
    actorUserId: refused.userId ?? null,
    actorRole: refused.role ?? null,
    requestId: c.get('requestId'),
    clientIp: c.get('clientIp'),
    detail: { method: c.req.method, route: routePath(c, -1), reason: refused.reason },
  };
  if (immediately) await writeAudit(deps.db, deps.clock, event);
  else deps.auditTrail.record(event);
}
