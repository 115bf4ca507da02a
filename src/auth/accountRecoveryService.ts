import type { UserRow } from '../../db/schema.js';
import { writeAudit } from '../audit/auditService.js';
import { auditedError } from '../audit/requestAudit.js';
import { AppError } from '../errors.js';
import type { AppDeps, RequestContext } from '../http/types.js';
import { normalizeEmail, replacePasswordWithResetCode } from '../users/userRepository.js';
import type { CodePurpose } from './accessCodes.js';
import {
  assertPasswordAllowed,
  checkCode,
  codeSpentMeanwhile,
  isCodeSpentMeanwhile,
} from './accountCodes.js';
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
  const failure = {
    action: 'auth.password_reset',
    outcome: 'failed',
    errorCode: 'invalid_access_code',
    requestId: ctx.requestId,
    clientIp: ctx.clientIp,
  } as const;
  if (!check.ok) {
    await writeAudit(deps.db, deps.clock, {
      ...failure,
      actorUserId: check.user?.id ?? null,
      actorRole: check.user?.role ?? null,
      targetUserId: check.user?.id ?? null,
      detail: { reason: check.reason },
    });
    // the other refusals (password policy, rate limit) are audited by onError
    throw auditedError(new AppError('invalid_access_code'));
  }
  const { user } = check;
  const now = deps.clock.now();
  const passwordHash = await deps.passwords.hash(input.new_password);
  try {
    await replaceWithCode(deps, ctx, check, passwordHash, now);
  } catch (error) {
    if (!isCodeSpentMeanwhile(error)) throw error;
    // audited at the account it named, as every other wrong try is
    await writeAudit(deps.db, deps.clock, {
      ...failure,
      actorUserId: user.id,
      actorRole: user.role,
      targetUserId: user.id,
      detail: { reason: 'spent' },
    });
    throw auditedError(new AppError('invalid_access_code'));
  }
}

/** The reset's one transaction: the password replaced with the code spent, every session ended, audited. */
async function replaceWithCode(
  deps: AppDeps,
  ctx: RequestContext,
  check: { user: UserRow; hash: string },
  passwordHash: string,
  now: Date,
): Promise<void> {
  const { user } = check;
  await deps.db.transaction().execute(async (trx) => {
    const replaced = await replacePasswordWithResetCode(trx, {
      id: user.id,
      codeHash: check.hash,
      passwordHash,
      at: now.toISOString(),
    });
    // a concurrent reset with the same code won
    if (!replaced) throw codeSpentMeanwhile();
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
