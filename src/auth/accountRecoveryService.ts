import type { UserRow } from '../../db/schema.js';
import { writeAudit } from '../audit/auditService.js';
import { enqueueAccessCodeMail } from '../email/outbox.js';
import { AppError } from '../errors.js';
import type { AppDeps, RequestContext } from '../http/types.js';
import { nameFromFhir } from '../users/fhirIdentity.js';
import { findUserByEmail, normalizeEmail } from '../users/userRepository.js';
import {
  accessCodeMatches,
  type CodePurpose,
  generateAccessCode,
  hashAccessCode,
  MAX_CODE_ATTEMPTS,
} from './accessCodes.js';
import { checkPassword } from './passwordPolicy.js';
import { countHit, RATE_LIMITS } from './rateLimiter.js';
import { revokeAllSessions } from './sessions.js';

/**
 * Resending a signup code and resetting a forgotten password. Both "send me a code" endpoints
 * answer 202 at once whatever the email: the work runs after the answer, so neither the
 * status nor the timing says whether an account exists.
 */

async function mailNewCode(
  deps: AppDeps,
  user: UserRow,
  purpose: CodePurpose,
  ctx: RequestContext,
): Promise<void> {
  const now = deps.clock.now();
  const ttl = purpose === 'signup' ? deps.config.accessCodeTtlSeconds : deps.config.resetCodeTtlSeconds;
  const expiresAt = new Date(now.getTime() + ttl * 1000).toISOString();
  const code = generateAccessCode();
  const hash = hashAccessCode(deps.secrets.codeHmacKey, purpose, user.email, code);
  const name = await nameFromFhir(deps, user);
  await deps.db.transaction().execute(async (trx) => {
    const columns =
      purpose === 'signup'
        ? { access_code_hash: hash, access_code_expires_at: expiresAt, access_code_attempts: 0 }
        : { reset_code_hash: hash, reset_code_expires_at: expiresAt, reset_code_attempts: 0 };
    await trx
      .updateTable('users')
      .set({ ...columns, updated_at: now.toISOString() })
      .where('id', '=', user.id)
      .execute();
    await enqueueAccessCodeMail(trx, deps.clock, deps.secrets.sealingKey, {
      template: 'access_code',
      to: user.email,
      name,
      role: user.role,
      purpose,
      code,
      expiresAt,
    });
    await writeAudit(trx, deps.clock, {
      action: purpose === 'signup' ? 'auth.access_code_resend' : 'auth.password_forgot',
      outcome: 'success',
      actorUserId: user.id,
      actorRole: user.role,
      targetUserId: user.id,
      requestId: ctx.requestId,
      clientIp: ctx.clientIp,
    });
  });
  deps.outbox.wake();
}

/** Who may receive a code of each purpose: signup for pending accounts, reset for registered ones. */
const ELIGIBLE: Record<CodePurpose, (user: UserRow) => boolean> = {
  signup: (user) => user.role !== 'admin' && user.is_registered === 0 && user.is_active === 1,
  password_reset: (user) => user.is_registered === 1 && user.is_active === 1,
};

/**
 * Counts the request against the mail limits, then — after the 202 is sent, so timing says
 * nothing — mails a new code if the account is eligible. Failures are logged, never shown.
 */
async function mailCodeIfEligible(
  deps: AppDeps,
  rawEmail: string,
  purpose: CodePurpose,
  ctx: RequestContext,
) {
  const email = normalizeEmail(rawEmail);
  await countHit(deps.db, deps.clock, [
    { rule: RATE_LIMITS.mailEmail, subject: email },
    { rule: RATE_LIMITS.mailIp, subject: ctx.clientIp },
  ]);
  deps.background.run(async () => {
    const user = await findUserByEmail(deps.db, email);
    if (user && ELIGIBLE[purpose](user)) await mailNewCode(deps, user, purpose, ctx);
  });
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
  await countHit(deps.db, deps.clock, [
    { rule: RATE_LIMITS.codeEmail, subject: email },
    { rule: RATE_LIMITS.codeIp, subject: ctx.clientIp },
  ]);
  const refusal = checkPassword({ minLength: deps.config.passwordMinLength }, input.new_password, {
    email,
    appName: deps.config.appName,
  });
  if (refusal)
    throw new AppError('validation_failed', { errors: [{ path: 'new_password', message: refusal }] });

  const now = deps.clock.now();
  const user = await findUserByEmail(deps.db, email);
  const eligible = user && user.is_registered === 1 && user.is_active === 1 && user.reset_code_hash !== null;
  const usable =
    eligible &&
    user.reset_code_attempts < MAX_CODE_ATTEMPTS &&
    (user.reset_code_expires_at ?? '') > now.toISOString();
  const matches = accessCodeMatches(
    deps.secrets.codeHmacKey,
    'password_reset',
    email,
    input.code,
    user?.reset_code_hash ?? null,
  );
  if (!usable || !matches) {
    if (eligible && !matches) {
      await deps.db
        .updateTable('users')
        .set((eb) => ({ reset_code_attempts: eb('reset_code_attempts', '+', 1) }))
        .where('id', '=', user.id)
        .execute();
    }
    await writeAudit(deps.db, deps.clock, {
      action: 'auth.password_reset',
      outcome: 'failed',
      actorUserId: user?.id ?? null,
      requestId: ctx.requestId,
      clientIp: ctx.clientIp,
    });
    throw new AppError('invalid_access_code');
  }

  const passwordHash = await deps.passwords.hash(input.new_password);
  await deps.db.transaction().execute(async (trx) => {
    const updated = await trx
      .updateTable('users')
      .set((eb) => ({
        password_hash: passwordHash,
        reset_code_hash: null,
        reset_code_expires_at: null,
        reset_code_attempts: 0,
        token_version: eb('token_version', '+', 1),
        updated_at: now.toISOString(),
      }))
      .where('id', '=', user.id)
      .where('reset_code_hash', '=', user.reset_code_hash)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1) throw new AppError('invalid_access_code');
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
