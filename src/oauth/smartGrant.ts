import type { KoaContextWithOIDC, Provider } from 'oidc-provider';
import type { Role } from '../../db/schema.js';
import { SCOPES_BY_ROLE } from '../auth/tokens.js';
import {
  type Grantable,
  grantableScopes,
  parseResourceScope,
  SUPPORTED_OTHER_SCOPES,
} from '../fhir/smartScopes.js';

/**
 * What a SMART grant holds: the intersection of what the app asked for, what it is registered
 * for and what the person's role allows (smartScopes.ts), written into an oidc-provider Grant.
 */

/** The OpenID Connect scopes, which oidc-provider also keeps apart for the id_token and refresh tokens. */
const OIDC_SCOPES = new Set(['openid', 'fhirUser', 'offline_access']);

/**
 * What each role may grant an app: the role-wide SMART scope of its /auth/login tokens, the
 * OpenID scopes, and `launch/patient` for patients only (a practitioner has no patient picker here).
 */
function scopesForRole(role: Role): string {
  const launch = role === 'patient' ? ' launch/patient' : '';
  return `${SCOPES_BY_ROLE[role]}${launch} openid fhirUser offline_access`;
}

/** The grant of one consent. */
export function grantFor(requested: string, appScopes: string, role: Role): Grantable {
  return grantableScopes(requested, appScopes, scopesForRole(role));
}

/**
 * Writes a consent into a new Grant: every granted scope for the FHIR base (so the access
 * token's `scope` lists them all), the OpenID ones also as OpenID scopes, and the dropped ones
 * as rejected (oidc-provider then knows the person saw them).
 */
export async function saveGrant(
  provider: Provider,
  input: { accountId: string; clientId: string; fhirBase: string; grant: Grantable },
): Promise<string> {
  const grant = new provider.Grant({ accountId: input.accountId, clientId: input.clientId });
  const { granted } = input.grant;
  // oidc-provider removes a rejected scope from the granted ones: a scope is never both
  const dropped = input.grant.dropped.filter((scope) => !granted.includes(scope));
  grant.addResourceScope(input.fhirBase, granted.join(' '));
  const oidc = granted.filter((s) => OIDC_SCOPES.has(s));
  if (oidc.length > 0) grant.addOIDCScope(oidc.join(' '));
  if (dropped.length > 0) grant.rejectResourceScope(input.fhirBase, dropped.join(' '));
  const droppedOidc = dropped.filter((s) => OIDC_SCOPES.has(s));
  if (droppedOidc.length > 0) grant.rejectOIDCScope(droppedOidc.join(' '));
  return grant.save();
}

/** A scope the gateway knows: a SMART resource scope or one of the supported others. */
function recognised(scope: string): boolean {
  return parseResourceScope(scope) !== undefined || SUPPORTED_OTHER_SCOPES.includes(scope);
}

/**
 * The scopes the FHIR base may hold in this request (oidc-provider's resource server `scope`):
 * those asked for now that the gateway knows, and those already granted (at the token and
 * refresh endpoints, where nothing is asked). What is actually granted is decided at consent.
 */
export function recognisedScopes(ctx: KoaContextWithOIDC, fhirBase: string): string {
  const asked = (ctx.oidc.params?.scope as string | undefined)?.split(' ').filter(recognised) ?? [];
  const granted = ctx.oidc.entities.Grant?.getResourceScope(fhirBase).split(' ').filter(Boolean) ?? [];
  return [...new Set([...asked, ...granted])].join(' ');
}
