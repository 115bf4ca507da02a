import type Provider from 'oidc-provider';
import type { errors, KoaContextWithOIDC } from 'oidc-provider';
import type { AuditOutcome } from '../../db/schema.js';
import type { AuditEvent } from '../audit/auditService.js';
import type { AppDeps, RequestContext } from '../http/types.js';
import type { GatewayAccount } from './accounts.js';
import { requestContextOf } from './gatewayRequest.js';

/**
 * The audit of oidc-provider's own endpoints: what an app got at the token endpoint, and every
 * refusal there, at the authorization endpoint and at revocation. They go to the batched trail
 * (`record` never waits or throws) from oidc-provider's events, which it emits while it answers.
 * Never a code, token, secret or verifier: only the OAuth error code, the grant type and the
 * app's client_id once the app is known (an unknown client_id is the caller's text).
 */

const GRANT_TYPES = new Set(['authorization_code', 'refresh_token']);

/**
 * A wrong credential (a client secret, a code, its PKCE verifier, a refresh token) is `failed`, as
 * a wrong password is; any other refusal (a malformed request, a scope or grant type not allowed)
 * is `denied` (security.md's audited events).
 */
export function smartRefusalOutcome(oauthError: string): AuditOutcome {
  return oauthError === 'invalid_client' || oauthError === 'invalid_grant' ? 'failed' : 'denied';
}

/** A replayed code or refresh token is audited when its grant is revoked (accounts.ts): not twice. */
const auditedReplays = new WeakSet<object>();

export function markReplayAudited(ctx: KoaContextWithOIDC): void {
  auditedReplays.add(ctx);
}

function requestFields(ctx: KoaContextWithOIDC): Pick<AuditEvent, 'requestId' | 'clientIp'> {
  const request = requestContextOf(ctx.req);
  return { requestId: request?.requestId ?? null, clientIp: request?.clientIp ?? null };
}

function grantTypeOf(ctx: KoaContextWithOIDC): string | null {
  const grantType = ctx.oidc?.params?.grant_type;
  return typeof grantType === 'string' && GRANT_TYPES.has(grantType) ? grantType : null;
}

function refusal(action: string, ctx: KoaContextWithOIDC, error: errors.OIDCProviderError): AuditEvent {
  return {
    action,
    outcome: smartRefusalOutcome(error.error),
    errorCode: error.error,
    ...requestFields(ctx),
    detail: {
      via: 'smart',
      client_id: ctx.oidc?.client?.clientId ?? null,
      grant_type: grantTypeOf(ctx),
      status: error.statusCode,
    },
  };
}

/**
 * A request to the token or revocation endpoint refused before oidc-provider read it (a client
 * authenticating twice, a body over the limit: publicRefresh.ts), audited as its own refusals are.
 * No app is named: the request was not read far enough to know which it is.
 */
export function refusedBeforeProvider(
  action: 'smart.token' | 'smart.revoke',
  status: number,
  request: RequestContext,
): AuditEvent {
  return {
    action,
    outcome: 'denied',
    errorCode: 'invalid_request',
    requestId: request.requestId,
    clientIp: request.clientIp,
    detail: { via: 'smart', client_id: null, grant_type: null, status },
  };
}

/** Tokens issued for an authorization code: the app's session begins (a refresh is not audited, as /auth/refresh's is not). */
function codeExchanged(ctx: KoaContextWithOIDC): AuditEvent | undefined {
  if (grantTypeOf(ctx) !== 'authorization_code') return undefined;
  const user = (ctx.oidc.entities.Account as GatewayAccount | undefined)?.user;
  return {
    action: 'smart.token',
    outcome: 'success',
    actorUserId: user?.id ?? null,
    actorRole: user?.role ?? null,
    ...requestFields(ctx),
    detail: {
      via: 'smart',
      client_id: ctx.oidc.client?.clientId ?? null,
      grant_type: 'authorization_code',
      scope: ctx.oidc.entities.AccessToken?.scope ?? null,
    },
  };
}

/** Audits the token, authorization and revocation endpoints of one provider (createOAuthServer calls it). */
export function auditOAuthEndpoints(provider: Provider, deps: AppDeps): void {
  const record = (action: string) => (ctx: KoaContextWithOIDC, error: errors.OIDCProviderError) => {
    if (!auditedReplays.has(ctx)) deps.auditTrail.record(refusal(action, ctx, error));
  };
  provider.on('grant.error', record('smart.token'));
  provider.on('revocation.error', record('smart.revoke'));
  provider.on('authorization.error', (ctx, error) => {
    // a person's Deny on the consent page is audited there, as smart.consent
    if (error.error !== 'access_denied') record('smart.authorize')(ctx, error);
  });
  provider.on('grant.success', (ctx) => {
    const event = codeExchanged(ctx);
    if (event) deps.auditTrail.record(event);
  });
}
