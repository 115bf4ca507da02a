import type { Context, MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { writeAudit } from '../audit/auditService.js';
import { tokenSettingsOf, verifyAccessToken } from '../auth/tokens.js';
import { AppError } from '../errors.js';
import type { AppEnv } from '../http/types.js';
import { type Db, findUserById } from '../users/userRepository.js';

const BEARER = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/;

/** RFC 6750 challenge; the same for every failure so it does not tell an attacker why. */
export const BEARER_CHALLENGE = 'Bearer realm="fhir-facade", error="invalid_token"';

function unauthenticated(): AppError {
  return new AppError('unauthenticated', { headers: { 'WWW-Authenticate': BEARER_CHALLENGE } });
}

/**
 * Requires a valid access token in the Authorization header (never a query parameter: URLs
 * end up in logs and browser history). Besides the signature and claims, the user must still
 * exist, be registered and active, and have the token's token_version, and the token's session
 * must be live — so deactivation, password reset and logout refuse older tokens on their very
 * next request.
 */
export function authenticate(options: { auditFailures?: boolean } = {}): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const refuse = async () => {
      if (options.auditFailures) await auditRefusal(c);
      return unauthenticated();
    };
    const match = BEARER.exec(c.req.header('authorization') ?? '');
    if (!match?.[1]) throw await refuse();
    const deps = c.var.deps;
    const claims = await verifyAccessToken(
      deps.signingKey,
      tokenSettingsOf(deps.config.jwt),
      match[1],
      deps.clock.now(),
    );
    if (!claims) throw await refuse();
    const [user, session] = await Promise.all([
      findUserById(deps.db, claims.sub),
      findSession(deps.db, claims.sid),
    ]);
    const current =
      user?.is_active === 1 &&
      user.is_registered === 1 &&
      user.token_version === claims.ver &&
      user.role === claims.role;
    // logout and refresh-token reuse revoke the session, and with it every access token it issued
    const sessionLive =
      session?.user_id === claims.sub &&
      !session.revoked_at &&
      session.expires_at > deps.clock.now().toISOString();
    if (!user || !current || !sessionLive) throw await refuse();
    c.set('caller', { userId: user.id, role: user.role, fhirId: user.fhir_resource_id, claims });
    await next();
  };
}

/** Admin routes leave a trail even for callers without a valid token. */
async function auditRefusal(c: Context<AppEnv>): Promise<void> {
  await writeAudit(c.var.deps.db, c.var.deps.clock, {
    action: 'access.denied',
    outcome: 'denied',
    requestId: c.var.requestId,
    clientIp: c.var.clientIp,
    detail: { method: c.req.method, route: routePath(c, -1), reason: 'unauthenticated' },
  });
}

function findSession(db: Db, id: string) {
  return db
    .selectFrom('sessions')
    .select(['user_id', 'revoked_at', 'expires_at'])
    .where('id', '=', id)
    .executeTakeFirst();
}
