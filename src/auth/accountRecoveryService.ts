import { writeAudit } from '../audit/auditService.js';
import { auditedError } from '../audit/requestAudit.js';
import { AppError } from '../errors.js';
import type { AppDeps, RequestContext } from '../http/types.js';
import { normalizeEmail, replacePasswordWithResetCode } from '../users/userRepository.js';
import type { CodePurpose } from './accessCodes.js';
import { assertPasswordAllowed, checkCode } from './accountCodes.js';
import { fulfilCodeRequest, recordCodeRequest } from './codeRequests.js';
import { countAttempt } from './credentialAttempts.js';
import { RATE_LIMITS } from './rateLimiter.js';
import { revokeAllSessions } from './sessions.js';

/**
 * Resending a signup code and resetting a forgotten password. Both "send me a code" endpoints
 * answer 202 at once whatever the email: the work runs after the answer, so neither the
 * status nor the timing says whether an account exists.
 */

/**
 * Counts the request against the mail limits and records it, then — after the 202 is sent, so
 * timing says nothing — mails a new code if the account is eligible. A failure is logged, never
 * shown, and retried (codeRequests.ts): an accepted request's mail is not lost.
 */
async function mailCodeIfEligible(
  deps: AppDeps,
  rawEmail: string,
  purpose: CodePurpose,
  ctx: RequestContext,
) {
  const email = normalizeEmail(rawEmail);
  const action = purpose === 'signup' ? 'auth.access_code_resend' : 'auth.password_forgot';
  await countAttempt(deps, ctx, action, email, [
    { rule: RATE_LIMITS.mailEmail, subject: email },
    { rule: RATE_LIMITS.mailIp, subject: ctx.clientIp },
  ]);
  const request = await recordCodeRequest(deps, purpose, email, ctx);
  deps.background.run(() => fulfilCodeRequest(deps, request));
}

/** POST /auth/access-code/resend: a pending account gets a fresh code (the old one is void). */
export function resendAccessCode(deps: AppDeps, rawEmail: string, ctx: RequestContext): Promise<void> {
  return mailCodeIfEligible(deps, rawEmail, 'signup', ctx);
}

/** POST /auth/password/forgot: an active, registered account gets a reset code. */
export function forgotPassword(deps: AppDeps, rawEmail: string, ctx: RequestContext): Promise<void> {
  return mailCodeIfEligible(deps, rawEmail, 'password_reset', ctx);
}

export interface ResetInput {
  email: string;
  code: string;
  new_password: string;
}

/**
 * POST /auth/password/reset: with a valid reset code, sets the new password and ends every
 * session of the account (token_version bump + sessions revoked). Failures are one generic 400.
 */
export async function resetPassword(deps: AppDeps, input: ResetInput, ctx: RequestContext): Promise<void> {
  const email = normalizeEmail(input.email);
  await countAttempt(deps, ctx, 'auth.password_reset', email, [
    { rule: RATE_LIMITS.codeEmail, subject: email },
    { rule: RATE_LIMITS.codeIp, subject: ctx.clientIp },
  ]);
  assertPasswordAllowed(deps, input.new_password, email, 'new_password');
  const check = await checkCode(deps, 'password_reset', email, input.code);
  if (!check.ok) {
    await writeAudit(deps.db, deps.clock, {
      action: 'auth.password_reset',
      outcome: 'failed',
      errorCode: 'invalid_access_code',
      actorUserId: check.user?.id ?? null,
      actorRole: check.user?.role ?? null,
      targetUserId: check.user?.id ?? null,
      requestId: ctx.requestId,
      clientIp: ctx.clientIp,
      detail: { reason: check.reason },
    });
    // the other refusals (password policy, rate limit, a concurrent reset that won) are audited by onError
    throw auditedError(new AppError('invalid_access_code'));
  }
  const { user } = check;
  const now = deps.clock.now();
  const passwordHash = await deps.passwords.hash(input.new_password);
  await deps.db.transaction().execute(async (trx) => {
    const replaced = await replacePasswordWithResetCode(trx, {
      id: user.id,
      codeHash: check.hash,
      passwordHash,
      at: now.toISOString(),
    });
    if (!replaced) throw new AppError('invalid_access_code');
    await revokeAllSessions(trx, user.id, 'password_reset', now);
    await writeAudit(trx, deps.clock, {
      action: 'auth.password_reset',
      outcome: 'success',
      actorUserId: user.id,
      actorRole: user.role,
      targetUserId: user.id,
      requestId: ctx.requestId,
      clientIp: ctx.clientIp,
    });
  });
}
