import type { UserRow } from '../../db/schema.js';
import { type AuditEvent, writeAudit } from '../audit/auditService.js';
import { enqueueAccessCodeMail } from '../email/outbox.js';
import { AppError } from '../errors.js';
import type { AppDeps } from '../http/types.js';
import type { SecretKey } from '../secrets.js';
import { canSignIn } from '../users/accountStatus.js';
import { countWrongCode, type Db, findUserByEmail, storeCode } from '../users/userRepository.js';
import {
  accessCodeMatches,
  type CodePurpose,
  generateAccessCode,
  hashAccessCode,
  MAX_CODE_ATTEMPTS,
} from './accessCodes.js';
import { checkPassword } from './passwordPolicy.js';

/**
 * The lifecycle of a stored code, the same for signup and password reset: issue (keyed hash
 * stored, code mailed through the outbox, audited, in one transaction) and check (against the
 * hash for that email only, wrong tries counted, 5 void it).
 */

/** Which accounts may hold a code of each purpose: signup for pending ones, reset for registered ones. */
export const CODE_ELIGIBLE: Readonly<Record<CodePurpose, (user: UserRow) => boolean>> = {
  signup: (user) => user.role !== 'admin' && user.is_registered === 0 && user.is_active === 1,
  password_reset: (user) => canSignIn(user),
};

/** The user's stored code of a purpose: hash, expiry, wrong tries so far. */
function storedCode(user: UserRow, purpose: CodePurpose) {
  return purpose === 'signup'
    ? {
        hash: user.access_code_hash,
        expiresAt: user.access_code_expires_at,
        attempts: user.access_code_attempts,
      }
    : {
        hash: user.reset_code_hash,
        expiresAt: user.reset_code_expires_at,
        attempts: user.reset_code_attempts,
      };
}

function codeColumns(purpose: CodePurpose, hash: string, expiresAt: string) {
  return purpose === 'signup'
    ? { access_code_hash: hash, access_code_expires_at: expiresAt, access_code_attempts: 0 }
    : { reset_code_hash: hash, reset_code_expires_at: expiresAt, reset_code_attempts: 0 };
}

export interface IssuedCode {
  readonly code: string;
  readonly expiresAt: string;
}

/**
 * Replaces the user's code of this purpose (the old one stops working at once) and queues its
 * mail, in one transaction with the audit entry. Throws 409 when the account is no longer
 * eligible (e.g. registered meanwhile).
 */
export async function issueCode(
  deps: AppDeps,
  user: UserRow,
  purpose: CodePurpose,
  audit: Omit<AuditEvent, 'outcome'>,
  /** More writes of the same commit (a code request closed: src/auth/codeRequests.ts). */
  alsoInCommit?: (trx: Db) => Promise<unknown>,
): Promise<IssuedCode> {
  const now = deps.clock.now();
  const ttl = purpose === 'signup' ? deps.config.accessCodeTtlSeconds : deps.config.resetCodeTtlSeconds;
  const expiresAt = new Date(now.getTime() + ttl * 1000).toISOString();
  const code = generateAccessCode();
  const hash = hashAccessCode(deps.secrets.codeHmacKey, purpose, user.email, code);
  // the greeting is the name stored with the account: a code mail never waits for the FHIR server
  const name = user.display_name ?? '';
  await deps.db.transaction().execute(async (trx) => {
    const columns = { ...codeColumns(purpose, hash, expiresAt), updated_at: now.toISOString() };
    // a signup code goes to an account not registered yet, a reset code to a registered one
    if (!(await storeCode(trx, user.id, purpose !== 'signup', columns))) {
      throw new AppError('conflict', { detail: 'The account changed meanwhile; try again.' });
    }
    await enqueueAccessCodeMail(trx, deps.clock, deps.secrets.sealingKey, {
      template: 'access_code',
      to: user.email,
      name,
      role: user.role,
      purpose,
      code,
      expiresAt,
    });
    await writeAudit(trx, deps.clock, { ...audit, outcome: 'success' });
    await alsoInCommit?.(trx);
  });
  deps.outbox.wake();
  return { code, expiresAt };
}

/** Whether a mailed code still works: `superseded` by a newer one, `voided` by its wrong tries. */
export type CodeState = 'current' | 'superseded' | 'voided';

/**
 * What became of `code`, the account's code of this purpose when it was mailed. A re-issue or a
 * resend replaces it at once, but its mail may still wait in the outbox for a retry and go out
 * after the new one, so the newest mail would hold a dead code: the outbox worker asks this
 * before it sends, and mails only a current code. Five wrong tries void a code too, and no new
 * code follows then: that mail's end is the admin's to hear of (a re-issue mends it).
 */
export async function codeStateOf(
  db: Db,
  codeKey: SecretKey,
  purpose: CodePurpose,
  email: string,
  code: string,
): Promise<CodeState> {
  const user = await findUserByEmail(db, email);
  const stored = user ? storedCode(user, purpose) : undefined;
  if (!user || !stored || !accessCodeMatches(codeKey, purpose, user.email, code, stored.hash))
    return 'superseded';
  // an account deactivated since the code was mailed has no code that works: nothing to send
  if (user.is_active !== 1) return 'superseded';
  return stored.attempts < MAX_CODE_ATTEMPTS ? 'current' : 'voided';
}

export type CodeCheck =
  | { readonly ok: true; readonly user: UserRow; readonly hash: string }
  | { readonly ok: false; readonly user: UserRow | undefined; readonly reason: string };

/**
 * Checks a typed code against the keyed hash stored for this email only. The HMAC runs for every
 * request, known account or not, so timing does not tell them apart; a wrong try on a live code
 * counts, and the fifth voids it.
 */
export async function checkCode(
  deps: AppDeps,
  purpose: CodePurpose,
  email: string,
  typed: string,
): Promise<CodeCheck> {
  const user = await findUserByEmail(deps.db, email);
  const stored = user ? storedCode(user, purpose) : undefined;
  const matches = accessCodeMatches(deps.secrets.codeHmacKey, purpose, email, typed, stored?.hash ?? null);
  if (!user || !stored?.hash || !CODE_ELIGIBLE[purpose](user)) {
    return { ok: false, user, reason: user ? 'not_eligible' : 'unknown_email' };
  }
  if (!matches) {
    await countWrongCode(deps.db, user.id, purpose, stored.hash);
    return { ok: false, user, reason: 'wrong_code' };
  }
  const live =
    stored.attempts < MAX_CODE_ATTEMPTS && (stored.expiresAt ?? '') > deps.clock.now().toISOString();
  return live ? { ok: true, user, hash: stored.hash } : { ok: false, user, reason: 'expired_or_void' };
}

/** The password policy for a password being chosen; a refusal names the field and says why. */
export function assertPasswordAllowed(deps: AppDeps, password: string, email: string, field: string): void {
  const refusal = checkPassword({ minLength: deps.config.passwordMinLength }, password, {
    email,
    appName: deps.config.appName,
  });
  if (refusal) throw new AppError('validation_failed', { errors: [{ path: field, message: refusal }] });
}

const SPENT_MEANWHILE = new Error('the code was spent by a concurrent request');

/** A code another request spent between this one's check and its commit: refused like a wrong try. */
export function codeSpentMeanwhile(): AppError {
  return new AppError('invalid_access_code', { cause: SPENT_MEANWHILE });
}

export function isCodeSpentMeanwhile(error: unknown): boolean {
  return error instanceof AppError && error.cause === SPENT_MEANWHILE;
}
