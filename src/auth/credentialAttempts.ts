import { auditedError } from '../audit/requestAudit.js';
import type { AppDeps, RequestContext } from '../http/types.js';
import { findUserByEmail } from '../users/userRepository.js';
import { countHit, type LimitKey, RateLimited } from './rateLimiter.js';

/**
 * Counts a credential attempt (a login, a signup, a reset, a code mail) against its limits. One
 * over a limit is audited here rather than by onError: at the account the request named, when it
 * exists, and with the limits it reached, so a run at one account (`login.account`) and a spray
 * from one address (`login.ip`) read apart in the trail. The account is looked up only then; the
 * answer stays the same 429 whether or not it exists.
 */
export async function countAttempt(
  deps: AppDeps,
  ctx: RequestContext,
  action: string,
  email: string,
  limits: readonly LimitKey[],
  detail: Record<string, string> = {},
): Promise<void> {
  try {
    await countHit(deps.db, deps.clock, limits);
  } catch (error) {
    if (!(error instanceof RateLimited)) throw error;
    const account = await findUserByEmail(deps.db, email);
    deps.auditTrail.record({
      action,
      outcome: 'denied',
      errorCode: 'rate_limited',
      actorUserId: account?.id ?? null,
      actorRole: account?.role ?? null,
      requestId: ctx.requestId,
      clientIp: ctx.clientIp,
      detail: { ...detail, limit: error.limits.join(' '), status: error.status },
    });
    throw auditedError(error);
  }
}
