import type { Account, KoaContextWithOIDC } from 'oidc-provider';
import type { UserRow } from '../../db/schema.js';
import { writeAudit } from '../audit/auditService.js';
import { revokeSession } from '../auth/sessions.js';
import type { AppDeps, RequestContext } from '../http/types.js';
import { canSignIn } from '../users/accountStatus.js';
import { fhirReferenceOf } from '../users/fhirIdentity.js';
import { findUserById } from '../users/userRepository.js';
import { fhirBaseOf } from './urls.js';

/**
 * The gateway's accounts as oidc-provider sees them, and the gateway session behind every
 * SMART grant. A grant's id IS the id of a row in `sessions` (created at consent, with the app's
 * `client_id`), and its access tokens carry it as `sid` with the user's `ver`: POST /auth/logout
 * with a SMART token, deactivating the user (which bumps `ver` and revokes every session) and
 * deactivating the app (which revokes its sessions) stop its tokens exactly like the gateway's
 * own, on the next request.
 */

export interface GatewayAccount extends Account {
  readonly user: UserRow;
}

async function sessionLive(deps: AppDeps, sessionId: string, userId: string): Promise<boolean> {
  const session = await deps.db
    .selectFrom('sessions')
    .select(['user_id', 'revoked_at', 'expires_at'])
    .where('id', '=', sessionId)
    .executeTakeFirst();
  return (
    session?.user_id === userId && !session.revoked_at && session.expires_at > deps.clock.now().toISOString()
  );
}

/** The absolute FHIR URL of the user's own record: the `fhirUser` claim of an id_token (SMART 2.0). */
function absoluteFhirUser(deps: AppDeps, user: UserRow): string | undefined {
  const reference = fhirReferenceOf(user);
  return reference ? `${fhirBaseOf(deps.config)}/${reference}` : undefined;
}

/**
 * oidc-provider's `findAccount`: an account that may sign in (registered and active), and —
 * when a code or refresh token is exchanged — whose grant's session is still live: a refresh
 * after logout, deactivation or password reset is refused (`invalid_grant`).
 */
export async function findAccount(
  deps: AppDeps,
  sub: string,
  token?: { grantId?: string | undefined },
): Promise<GatewayAccount | undefined> {
  const user = await findUserById(deps.db, sub);
  if (!user || !canSignIn(user)) return undefined;
  if (token?.grantId && !(await sessionLive(deps, token.grantId, user.id))) return undefined;
  const fhirUser = absoluteFhirUser(deps, user);
  return {
    accountId: user.id,
    user,
    claims: () => ({ sub: user.id, ...(fhirUser ? { fhirUser } : {}) }),
  };
}

/** The session a consent creates: the grant's id, so logout and deactivation find it. */
export async function startSmartSession(deps: AppDeps, grantId: string, user: UserRow, clientId: string) {
  const now = deps.clock.now();
  await deps.db
    .insertInto('sessions')
    .values({
      id: grantId,
      user_id: user.id,
      client_id: clientId,
      created_at: now.toISOString(),
      expires_at: new Date(now.getTime() + deps.config.jwt.sessionMaxAgeSeconds * 1000).toISOString(),
      revoked_at: null,
      revoked_reason: null,
    })
    .execute();
}

/** A spent code or refresh token presented again at the token endpoint, and the request that did it. */
export interface GrantReplay {
  readonly grantType: keyof typeof REPLAYS;
  readonly request: RequestContext | undefined;
}

// a replayed refresh token is audited as the gateway's own refresh reuse is (authService.refresh)
const REPLAYS = {
  refresh_token: { action: 'auth.refresh_reuse', reason: 'refresh_token_reuse' },
  authorization_code: { action: 'smart.code_reuse', reason: 'authorization_code_reuse' },
} as const;

/**
 * A grant was destroyed (refresh or code reuse, revocation endpoint): its session ends too. A
 * replay is a sign that a code or refresh token was stolen (RFC 9700 section 4.14.2): it is
 * audited, once per session, with the session's user as the actor and never the token itself.
 */
export async function revokeGrantSession(
  deps: AppDeps,
  grantId: string,
  replay?: GrantReplay,
): Promise<void> {
  const now = deps.clock.now();
  if (!replay) {
    await revokeSession(deps.db, grantId, 'oauth_grant_revoked', now);
    return;
  }
  const { action, reason } = REPLAYS[replay.grantType];
  // of two replays racing, only the one that revoked the session writes the entry
  if (!(await revokeSession(deps.db, grantId, reason, now))) return;
  const session = await deps.db
    .selectFrom('sessions as s')
    .innerJoin('users as u', 'u.id', 's.user_id')
    .select(['s.user_id', 's.client_id', 'u.role'])
    .where('s.id', '=', grantId)
    .executeTakeFirst();
  if (!session) return;
  await writeAudit(deps.db, deps.clock, {
    action,
    outcome: 'denied',
    actorUserId: session.user_id,
    actorRole: session.role,
    requestId: replay.request?.requestId ?? null,
    clientIp: replay.request?.clientIp ?? null,
    detail: { via: 'smart', client_id: session.client_id, session_revoked: true },
  });
}

/** Ends every session of an app (the app was deactivated). */
export async function revokeAppSessions(deps: AppDeps, clientId: string, reason: string): Promise<void> {
  const now = deps.clock.now().toISOString();
  await deps.db
    .updateTable('sessions')
    .set({ revoked_at: now, revoked_reason: reason })
    .where('client_id', '=', clientId)
    .where('revoked_at', 'is', null)
    .execute();
}

/** The token's granted scopes include the patient launch context. */
export function hasPatientContext(scope: string | undefined): boolean {
  return (scope ?? '').split(' ').includes('launch/patient');
}

/**
 * Claims added to every SMART access token (oidc-provider's `extraTokenClaims`): what
 * authenticate.ts checks on every /fhir request (`role`, `ver`, `sid`), the caller's FHIR
 * identity (`fhir_id`, `fhirUser` relative, as in the gateway's own tokens) and, with
 * `launch/patient`, the `patient` context.
 */
export async function smartTokenClaims(
  deps: AppDeps,
  ctx: KoaContextWithOIDC | undefined,
  token: { accountId?: string | undefined; grantId?: string | undefined; scope?: string | undefined },
): Promise<Record<string, unknown> | undefined> {
  if (!token.accountId || !token.grantId) return undefined;
  const account = ctx?.oidc.entities.Account as GatewayAccount | undefined;
  const user =
    account?.user.id === token.accountId ? account.user : await findUserById(deps.db, token.accountId);
  if (!user) return undefined;
  const patient = hasPatientContext(token.scope) && user.role === 'patient' ? user.fhir_resource_id : null;
  return {
    role: user.role,
    fhir_id: user.fhir_resource_id,
    fhirUser: fhirReferenceOf(user),
    ver: user.token_version,
    sid: token.grantId,
    ...(patient ? { patient } : {}),
  };
}
