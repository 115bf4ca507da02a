import { hkdfSync } from 'node:crypto';
// by name, not as the default: the CommonJS bundle requires this ES module, and esbuild's interop
// then makes `default` the whole namespace (`new` of it failed: scripts/runBundle.mjs)
import {
  type Configuration,
  errors,
  type JWK,
  type KoaContextWithOIDC,
  Provider,
  type ResourceServer,
} from 'oidc-provider';
import type { AppDeps } from '../http/types.js';
import {
  findAccount,
  type GatewayAccount,
  type GrantReplay,
  hasPatientContext,
  revokeGrantSession,
  smartTokenClaims,
} from './accounts.js';
import { databaseAdapter } from './adapter.js';
import { auditOAuthEndpoints, markReplayAudited } from './endpointAudit.js';
import { requestContextOf } from './gatewayRequest.js';
import { clientSecretMatches, isPublicAppOrigin } from './smartAppRepository.js';
import { recognisedScopes } from './smartGrant.js';
import { fhirBaseOf, INTERACTION_PREFIX, oauthIssuer, SESSION_COOKIE } from './urls.js';
import { errorPage, pageCsp } from './views.js';

/**
 * The SMART App Launch authorization server: panva's oidc-provider (OpenID Certified), with the
 * gateway's parts in place of its development defaults — our database as its storage
 * (adapter.ts), the gateway's ES256 signing key, our accounts (accounts.ts), our login and consent
 * pages (interactions.ts) — and SMART's rules on top
 * (https://hl7.org/fhir/smart-app-launch/app-launch.html):
 * - authorization code only, PKCE with S256 required of every client (`plain` is refused);
 * - codes live 60 s and are single use (a second use revokes the grant);
 * - `aud` must be the gateway's FHIR base; access tokens are ES256 JWTs (RFC 9068) for that
 *   audience with the granted SMART scopes, `client_id`, `fhirUser`, and what revocation needs;
 * - refresh tokens only with `offline_access`, rotated on every use, reuse revokes the grant;
 * - `id_token` with `fhirUser` when `openid fhirUser` is granted; `patient` in the token response
 *   with `launch/patient`.
 */

export interface OAuthServer {
  readonly provider: Provider;
  readonly issuer: string;
  readonly fhirBase: string;
  /** Sign the CSRF tokens of our login and consent forms: the first signs, each checks (a form opened before a rotation). */
  readonly csrfKeys: readonly Buffer[];
}

/** An authorization code's lifetime: SMART and RFC 6749 section 4.1.2 ask for a short one (≤ 60 s here). */
const CODE_TTL_SECONDS = 60;
/** How long a person has to log in and consent once an app sent them here. */
const INTERACTION_TTL_SECONDS = 10 * 60;

/** Keys derived from the cursor key ring: the current secret's first, then the previous one's (a rotation of APP_SECRET). */
const deriveKeys = (deps: AppDeps, label: string) =>
  deps.secrets.cursorKey.all.map((key) =>
    Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), `fhir-facade ${label} v1`, 32)),
  );

/**
 * The gateway's current signing key as the one key of the provider's key set (kid: its RFC 7638
 * thumbprint): oidc-provider signs with it and takes only private keys. The previous keys that
 * still verify are public only; /oauth/jwks is therefore served from the gateway's key set
 * (oauthRoutes.ts), the same document as /.well-known/jwks.json.
 */
function providerJwks(deps: AppDeps): { keys: JWK[] } {
  const { signing } = deps.tokenKeys;
  const jwk = signing.privateKey.export({ format: 'jwk' }) as JWK;
  return { keys: [{ ...jwk, kid: signing.kid, alg: 'ES256', use: 'sig' }] };
}

function resourceServerInfo(deps: AppDeps, fhirBase: string) {
  return async (ctx: KoaContextWithOIDC, indicator: string): Promise<ResourceServer> => {
    // the gateway's FHIR base is the only resource server; anything else is an invalid target
    if (indicator !== fhirBase) throw new errors.InvalidTarget();
    return {
      // what may be granted for it: the SMART scopes asked for now, or granted before (token, refresh)
      scope: recognisedScopes(ctx, fhirBase),
      audience: fhirBase,
      accessTokenFormat: 'jwt',
      accessTokenTTL: deps.config.jwt.accessTokenTtlSeconds,
      jwt: { sign: { alg: 'ES256' } },
    };
  };
}

/** SMART requires `aud`, and it must name this server's FHIR base (https://hl7.org/fhir/smart-app-launch/app-launch.html#obtain-authorization-code). */
function checkAud(fhirBase: string) {
  return async (_ctx: KoaContextWithOIDC, value: string | undefined) => {
    if (value === undefined)
      throw new errors.InvalidRequest("the aud parameter is required: this server's FHIR base URL");
    // a token asked for another server's audience would be replayed there by whoever holds it;
    // one trailing slash is the same base (fhirclient sends the iss it was given), and the
    // token's audience is fhirBase either way (resourceServerInfo)
    if (value !== fhirBase && value !== `${fhirBase}/`)
      throw new errors.InvalidRequest("aud must be this server's FHIR base URL");
  };
}

/**
 * SMART App Launch requires `state` on every authorization request: the app's check that the
 * answer at its redirect URI is to a request it made (PKCE guards the code, not the app's session).
 */
async function checkState(_ctx: KoaContextWithOIDC, value: string | undefined) {
  if (value === undefined || value === '')
    throw new errors.InvalidRequest('the state parameter is required (SMART App Launch)');
}

/** Public apps call the token endpoint from their own origin: CORS for the origins of their redirect URIs. */
function clientCors(
  _ctx: KoaContextWithOIDC,
  origin: string,
  client: { clientAuthMethod?: string | undefined; redirectUris?: readonly string[] | undefined },
) {
  if (origin === 'null' || client.clientAuthMethod !== 'none') return false;
  return (client.redirectUris ?? []).some((uri) => URL.parse(uri)?.origin === origin);
}

/**
 * With an https public address every request is the browser's https one, whatever reached us (a
 * TLS proxy without TRUST_PROXY, or a request past it): oidc-provider then marks its cookies
 * `Secure`, so a browser never sends the login session or an interaction over plain http.
 */
async function seenOverHttps(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
  Object.defineProperty(ctx.request, 'protocol', { value: 'https' });
  await next();
}

/**
 * Every URL oidc-provider builds (discovery's endpoints, its redirects) is on the public address,
 * never on the request's Host or X-Forwarded-Host: a forged one would be served back to the
 * caller, and to everyone else through a cache that does not key on it.
 */
function seenAtPublicHost(publicBaseUrl: string) {
  const { host, hostname } = new URL(publicBaseUrl);
  return async (ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> => {
    // Koa builds ctx.href, which oidc-provider's urlFor resolves against, from these
    Object.defineProperty(ctx.request, 'host', { value: host });
    Object.defineProperty(ctx.request, 'hostname', { value: hostname });
    await next();
  };
}

/**
 * oidc-provider allows the caller's Origin on the token and revocation endpoints before it knows
 * the app, and checks it (clientCors) only once one is named: an answer given before that (no
 * client_id, an unknown one, a bogus token) would let any site read it. Those answers carry none,
 * and a preflight (which names no app) allows only the origin of some public app.
 */
function noOriginWithoutClient(deps: AppDeps) {
  return async (ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> => {
    try {
      await next();
    } finally {
      if (ctx.method === 'OPTIONS') {
        // a preflight is answered before routing (no ctx.oidc); oauthRoutes.ts hands paths over in one spelling
        const tokenOrRevocation = ctx.path === '/token' || ctx.path === '/revoke';
        if (tokenOrRevocation && !(await isPublicAppOrigin(deps.db, ctx.get('Origin'))))
          ctx.remove('Access-Control-Allow-Origin');
      } else if (ctx.oidc?.route === 'token' || ctx.oidc?.route === 'revocation') {
        if (!ctx.oidc.client) ctx.remove('Access-Control-Allow-Origin');
      }
    }
  };
}

/**
 * The replay a grant is revoked for, if that is why: at the token endpoint oidc-provider revokes a
 * grant only when a spent code or refresh token is presented again (its grant_source.js and
 * refresh_token.js, and adapter.ts's consume when two requests race with one); elsewhere it is a
 * revocation (RFC 7009) or a logout.
 */
function replayOf(ctx: KoaContextWithOIDC | undefined): GrantReplay | undefined {
  if (ctx?.oidc?.route !== 'token') return undefined;
  const grantType = ctx.oidc.params?.grant_type;
  if (grantType !== 'refresh_token' && grantType !== 'authorization_code') return undefined;
  return { grantType, request: requestContextOf(ctx.req) };
}

function configuration(deps: AppDeps, fhirBase: string): Configuration {
  const { jwt } = deps.config;
  return {
    adapter: databaseAdapter(deps.db, {
      grantRevoked: (grantId) => {
        const replay = replayOf(Provider.ctx);
        if (replay && Provider.ctx) markReplayAudited(Provider.ctx);
        return revokeGrantSession(deps, grantId, replay);
      },
    }),
    jwks: providerJwks(deps),
    findAccount: (_ctx, sub, token) => findAccount(deps, sub, token as { grantId?: string } | undefined),
    claims: { openid: ['sub'], fhirUser: ['fhirUser'] },
    scopes: ['openid', 'fhirUser', 'offline_access'],
    // the id_token carries the claims of its scopes (fhirUser): there is no userinfo endpoint
    conformIdTokenClaims: false,
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      id_token_signed_response_alg: 'ES256',
      token_endpoint_auth_method: 'none',
    },
    clientAuthMethods: ['none', 'client_secret_basic'],
    routes: { authorization: '/authorize', token: '/token', revocation: '/revoke', jwks: '/jwks' },
    responseTypes: ['code'],
    // PKCE for every client, confidential ones too; oidc-provider accepts only S256
    pkce: { required: () => true },
    // a redirect_uri must always be sent and match a registered one exactly
    allowOmittingSingleRegisteredRedirectUri: false,
    enabledJWA: {
      idTokenSigningAlgValues: ['ES256'],
      requestObjectSigningAlgValues: ['ES256'],
      clientAuthSigningAlgValues: ['ES256'],
      userinfoSigningAlgValues: ['ES256'],
      introspectionSigningAlgValues: ['ES256'],
      authorizationSigningAlgValues: ['ES256'],
    },
    features: {
      devInteractions: { enabled: false },
      dPoP: { enabled: false },
      pushedAuthorizationRequests: { enabled: false },
      rpInitiatedLogout: { enabled: false },
      userinfo: { enabled: false },
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => fhirBase,
        // the access token is always for the FHIR base, also when openid was asked
        useGrantedResource: async () => true,
        getResourceServerInfo: resourceServerInfo(deps, fhirBase),
      },
    },
    extraParams: { aud: checkAud(fhirBase), state: checkState },
    extraTokenClaims: (ctx, token) => smartTokenClaims(deps, ctx, token),
    interactions: { url: async (_ctx, interaction) => `${INTERACTION_PREFIX}${interaction.uid}` },
    // every launch gets its own grant (and gateway session): no earlier grant is reused silently
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId;
      return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
    },
    issueRefreshToken: async (_ctx, client, code) =>
      client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
    rotateRefreshToken: true,
    ttl: {
      AccessToken: jwt.accessTokenTtlSeconds,
      AuthorizationCode: CODE_TTL_SECONDS,
      IdToken: jwt.accessTokenTtlSeconds,
      RefreshToken: jwt.refreshTokenTtlSeconds,
      Interaction: INTERACTION_TTL_SECONDS,
      Session: INTERACTION_TTL_SECONDS,
      Grant: jwt.sessionMaxAgeSeconds,
    },
    cookies: {
      names: {
        session: SESSION_COOKIE,
        interaction: 'fhir_facade_oauth_interaction',
        resume: 'fhir_facade_oauth_resume',
      },
      // keygrip: the first key signs, every key verifies (cookies set before a rotation of APP_SECRET)
      keys: deriveKeys(deps, 'oauth-cookies'),
      long: { signed: true, httpOnly: true, sameSite: 'lax' },
      short: { signed: true, httpOnly: true, sameSite: 'lax' },
    },
    clientBasedCORS: clientCors,
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.set('Content-Security-Policy', pageCsp());
      const description = out.error_description ?? out.error;
      ctx.body = errorPage(
        deps.config.appName,
        'This sign-in request cannot continue',
        `${out.error}: ${description}`,
      );
    },
  };
}

/** SMART's launch context in the token response: the patient, for a grant with `launch/patient`. */
async function patientContext(ctx: KoaContextWithOIDC, next: () => Promise<void>) {
  await next();
  const body = ctx.body as Record<string, unknown> | undefined;
  if (ctx.routerName !== 'token' || ctx.status !== 200 || typeof body?.access_token !== 'string') return;
  const account = ctx.oidc.entities.Account as GatewayAccount | undefined;
  const user = account?.user;
  if (
    user?.role === 'patient' &&
    user.fhir_resource_id &&
    hasPatientContext(body.scope as string | undefined)
  ) {
    body.patient = user.fhir_resource_id;
  }
}

/** Builds the authorization server for one gateway (createApp calls it once). */
export function createOAuthServer(deps: AppDeps): OAuthServer {
  const issuer = oauthIssuer(deps.config);
  const fhirBase = fhirBaseOf(deps.config);
  const provider = new Provider(issuer, configuration(deps, fhirBase));
  // behind a TLS-terminating proxy the request's scheme comes from X-Forwarded-Proto
  provider.proxy = deps.config.trustProxy;
  // secrets are stored as SHA-256 hashes: compare the hash of what the client sent
  provider.Client.prototype.compareClientSecret = function compare(this: { clientSecret?: string }, actual) {
    return clientSecretMatches(this.clientSecret, actual);
  };
  if (new URL(deps.config.publicBaseUrl).protocol === 'https:') provider.use(seenOverHttps);
  provider.use(seenAtPublicHost(deps.config.publicBaseUrl));
  provider.use(patientContext);
  provider.use(noOriginWithoutClient(deps));
  auditOAuthEndpoints(provider, deps);
  provider.on('server_error', (_ctx, error) => deps.logger.error({ err: error }, 'oauth server error'));
  // Koa's own handler would print the stack to stderr, outside the JSON log
  // (the Provider is the Koa application itself: its `.app` is deprecated)
  (provider as unknown as NodeJS.EventEmitter).on('error', (error: unknown) =>
    deps.logger.error({ err: error }, 'oauth request failed'),
  );
  return { provider, issuer, fhirBase, csrfKeys: deriveKeys(deps, 'oauth-csrf') };
}
