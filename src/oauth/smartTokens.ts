import { jwtVerify } from 'jose';
import {
  type AccessTokenClaims,
  CLOCK_SKEW_SECONDS,
  TOKEN_ALGORITHM,
  TOKEN_TYPE,
  type TokenCheck,
} from '../auth/tokens.js';
import { isFhirPath } from '../http/fhirPaths.js';
import type { AppDeps } from '../http/types.js';
import { fhirBaseOf, oauthIssuer } from './urls.js';

/**
 * SMART access tokens at /fhir. They are signed with the gateway's key like its own tokens but
 * name another issuer (`${PUBLIC_BASE_URL}/oauth`) and audience (the FHIR base), so they are
 * accepted only where the FHIR base is the audience: /fhir. Once verified they carry the same
 * claims authenticate.ts checks on every request (`sub`, `role`, `ver`, `sid`), plus the app's
 * `client_id`, whose app must still be active (smartAppStatus.ts).
 */

export interface SmartAccessTokenClaims extends AccessTokenClaims {
  client_id: string;
  patient?: string;
}

function isSmartClaims(
  payload: Record<string, unknown>,
): payload is SmartAccessTokenClaims & Record<string, unknown> {
  return (
    typeof payload.sub === 'string' &&
    (payload.role === 'admin' || payload.role === 'patient' || payload.role === 'practitioner') &&
    typeof payload.ver === 'number' &&
    typeof payload.sid === 'string' &&
    typeof payload.jti === 'string' &&
    typeof payload.client_id === 'string' &&
    typeof payload.scope === 'string'
  );
}

/**
 * Where a SMART token is accepted: the FHIR passthrough (its audience), and POST /auth/logout,
 * so an app can end its own session (and every token of it) the way the gateway's tokens do.
 */
export function acceptsSmartToken(path: string, method: string): boolean {
  return isFhirPath(path, method) || (method === 'POST' && path === '/auth/logout');
}

/** Same pins as the gateway's own tokens (tokens.ts): ES256 only, `typ: at+jwt`, issuer, audience, lifetime. */
export async function verifySmartAccessToken(deps: AppDeps, token: string, now: Date): Promise<TokenCheck> {
  try {
    const { payload } = await jwtVerify(token, deps.tokenKeys.keyFor, {
      algorithms: [TOKEN_ALGORITHM],
      issuer: oauthIssuer(deps.config),
      audience: fhirBaseOf(deps.config),
      typ: TOKEN_TYPE,
      requiredClaims: ['exp', 'iat', 'sub', 'jti'],
      clockTolerance: CLOCK_SKEW_SECONDS,
      maxTokenAge: deps.config.jwt.accessTokenTtlSeconds,
      currentDate: now,
    });
    return isSmartClaims(payload) ? { ok: true, claims: payload } : { ok: false, reason: 'invalid' };
  } catch (error) {
    const name = (error as { code?: string }).code;
    if (name === 'ERR_JWT_EXPIRED') return { ok: false, reason: 'expired' };
    return { ok: false, reason: 'invalid' };
  }
}

/** The app a verified token was issued to, when it is a SMART token. */
export function smartClientOf(claims: AccessTokenClaims): string | undefined {
  const clientId = (claims as Partial<SmartAccessTokenClaims>).client_id;
  return typeof clientId === 'string' ? clientId : undefined;
}
