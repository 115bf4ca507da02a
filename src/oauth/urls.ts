import type { Config } from '../config.js';

/** Where the SMART authorization server lives: every URL derives from PUBLIC_BASE_URL. */

/** The mount path of the authorization server (oidc-provider) inside the gateway. */
export const OAUTH_PREFIX = '/oauth';
/** The server-rendered login and consent pages (ours, not oidc-provider's). */
export const INTERACTION_PREFIX = `${OAUTH_PREFIX}/interaction/`;
/** The cookie of a browser's login session with the authorization server (oauthRoutes.ts reads it for prompt=none). */
export const SESSION_COOKIE = 'fhir_facade_oauth_session';

/** The issuer of SMART tokens and id_tokens: `${PUBLIC_BASE_URL}/oauth`. */
export function oauthIssuer(config: Pick<Config, 'publicBaseUrl'>): string {
  return `${config.publicBaseUrl}${OAUTH_PREFIX}`;
}

/** The FHIR base: the `aud` a SMART app must ask for, and the audience of its access tokens. */
export function fhirBaseOf(config: Pick<Config, 'publicBaseUrl'>): string {
  return `${config.publicBaseUrl}/fhir`;
}

/** The endpoints, as discovery lists them (oidc-provider's route names in comments). */
export function oauthEndpoints(config: Pick<Config, 'publicBaseUrl'>) {
  const issuer = oauthIssuer(config);
  return {
    authorization: `${issuer}/authorize`, // authorization
    token: `${issuer}/token`, // token
    revocation: `${issuer}/revoke`, // revocation
    jwks: `${issuer}/jwks`, // jwks
    openidConfiguration: `${issuer}/.well-known/openid-configuration`,
  };
}

/**
 * Requests oidc-provider answers itself: everything under /oauth but our interaction pages.
 * The gateway's body limit must not read their bodies (oidc-provider parses them, with its own
 * 56 KiB limit).
 */
export function isProtocolPath(path: string): boolean {
  return path.startsWith(`${OAUTH_PREFIX}/`) && !path.startsWith(INTERACTION_PREFIX);
}

/**
 * Endpoints whose CORS oidc-provider decides: a public app may call them from the origin of one
 * of its redirect URIs (provider.ts, clientCors), which no fixed list can name. Their preflights
 * are its to answer: it allows any origin there, and checks the origin against the app on the
 * request itself.
 */
export function decidesOwnCors(path: string): boolean {
  // spelled as oidc-provider routes it: any case, trailing slashes (src/oauth/oauthRoutes.ts)
  const endpoint = path.replace(/\/+$/, '').toLowerCase();
  return endpoint === `${OAUTH_PREFIX}/token` || endpoint === `${OAUTH_PREFIX}/revoke`;
}
