import { afterPendingCommits, isDatabaseUnreachable } from '../../db/connection.js';
import type { UserRow } from '../../db/schema.js';
import { type AuditEvent, writeAudit } from '../audit/auditService.js';
import { auditedError } from '../audit/requestAudit.js';
import { AppError } from '../errors.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import { FHIR_TYPE_BY_ROLE } from '../users/fhirIdentity.js';
import { toUserDto, type UserDto } from '../users/userDto.js';
import {
  activateWithCode,
  type Db,
  findUserByEmail,
  findUserById,
  normalizeEmail,
  recordLastLogin,
  replacePassword,
} from '../users/userRepository.js';
import { MAX_CODE_ATTEMPTS } from './accessCodes.js';
import {
  assertPasswordAllowed,
  checkCode,
  codeSpentMeanwhile,
  isCodeSpentMeanwhile,
} from './accountCodes.js';
import { countAttempt } from './credentialAttempts.js';
import { normalizePassword, passwordTooLong } from './passwords.js';
import { RATE_LIMITS, refundHit } from './rateLimiter.js';
import {
  beginSession,
  issueTokens,
  revokeAllSessions,
  revokeSession,
  rotateRefreshToken,
  type SessionGrant,
  sessionOfRefreshToken,
  type TokenResponse,
} from './sessions.js';

export type { TokenResponse };

export interface LoginInput {
  email: string;
  password: string;
}

export interface SignupInput {
  email: string;
  access_code: string;
  password: string;
  profile?: Record<string, string> | undefined;
}

type LoginFailure = 'unknown_email' | 'wrong_password' | 'not_registered' | 'deactivated';

function audit(deps: AppDeps, ctx: RequestContext, event: AuditEvent, db: Db = deps.db) {
  return writeAudit(db, deps.clock, { requestId: ctx.requestId, clientIp: ctx.clientIp, ...event });
}

/**
 * Email + password login. Every failure — unknown email, wrong password, pending or
 * deactivated account — is the same 401 with the same body, and costs one argon2
 * verification, so neither the answer nor its timing says which accounts exist.
 */
export async function login(deps: AppDeps, input: LoginInput, ctx: RequestContext): Promise<TokenResponse> {
  const grant = await verifyLogin(deps, input, ctx, {}, (trx, user) => beginSession(deps, user, trx));
  return issueTokens(deps, grant);
}

/** Why this password does not sign this account in, or undefined when it does. */
async function loginFailureOf(
  deps: AppDeps,
  user: UserRow | undefined,
  password: string,
): Promise<LoginFailure | undefined> {
  if (!user?.password_hash) {
    // hash a dummy password for unknown emails so timing does not reveal which accounts exist
    await deps.passwords.verifyDummy(password);
    return user ? 'not_registered' : 'unknown_email';
  }
  if (!(await deps.passwords.verify(user.password_hash, password))) return 'wrong_password';
  if (user.is_registered !== 1) return 'not_registered';
  if (user.is_active !== 1) return 'deactivated';
  return undefined;
}

/**
 * The checks of a login — rate limits, password length, argon2 verification, account state —
 * and their audit, without starting a session: POST /auth/login and the SMART login page
 * (src/oauth/interactions.ts, `detail` names the app) share them. Returns the verified user.
 */
export async function verifyLogin(
  deps: AppDeps,
  input: LoginInput,
  ctx: RequestContext,
  detail?: Record<string, string>,
): Promise<UserRow>;
export async function verifyLogin<T>(
  deps: AppDeps,
  input: LoginInput,
  ctx: RequestContext,
  detail: Record<string, string>,
  andThen: (trx: Db, user: UserRow) => Promise<T>,
): Promise<T>;
/** With `andThen`, what follows a successful login (starting the session) commits with its writes, in one transaction. */
export async function verifyLogin<T>(
  deps: AppDeps,
  input: LoginInput,
  ctx: RequestContext,
  detail: Record<string, string> = {},
  andThen?: (trx: Db, user: UserRow) => Promise<T>,
): Promise<UserRow | T> {
  const email = normalizeEmail(input.email);
  const limits = [
    { rule: RATE_LIMITS.loginAccount, subject: email },
    { rule: RATE_LIMITS.loginIp, subject: ctx.clientIp },
  ];
  // counted before verifying, in one atomic upsert, so parallel guesses cannot all pass a check
  // made before any of them is counted; a successful login gives its hit back below
  await countAttempt(deps, ctx, 'auth.login', email, limits, detail);
  // refused before hashing: an attacker must not make us hash megabytes; counted as signup counts it,
  // so every password that could be set passes
  if (passwordTooLong(input.password)) throw new AppError('invalid_credentials');
  const password = normalizePassword(input.password);
  const user = await findUserByEmail(deps.db, email);
  const failure = await loginFailureOf(deps, user, password);
  if (failure || !user) throw await refusedLogin(deps, ctx, user, failure ?? 'unknown_email', detail);
  // one commit for everything a success writes: the hit given back, last login, audit, the session
  const outcome = await deps.db.transaction().execute(async (trx) => {
    // security: a password change, reset or deactivation while the password was hashed ended
    // every session; one begun now on the old password would outlive it
    if (!(await recordLastLogin(trx, user, deps.clock.now()))) return CHANGED_MEANWHILE;
    await refundHit(trx, deps.clock, limits);
    await audit(
      deps,
      ctx,
      {
        action: 'auth.login',
        outcome: 'success',
        actorUserId: user.id,
        actorRole: user.role,
        ...(Object.keys(detail).length > 0 ? { detail } : {}),
      },
      trx,
    );
    return andThen ? andThen(trx, user) : user;
  });
  if (outcome !== CHANGED_MEANWHILE) return outcome;
  throw await refusedLogin(deps, ctx, user, 'changed_meanwhile', detail);
}

/** A login whose account changed (password, reset, deactivation) while its password was checked. */
const CHANGED_MEANWHILE = Symbol('changed meanwhile');

/** The one answer to every refused login (invalid_credentials), audited with its reason. */
async function refusedLogin(
  deps: AppDeps,
  ctx: RequestContext,
  user: UserRow | undefined,
  reason: LoginFailure | 'changed_meanwhile',
  detail: Record<string, string>,
): Promise<Error> {
  await audit(deps, ctx, {
    action: 'auth.login',
    outcome: 'failed',
    errorCode: 'invalid_credentials',
    actorUserId: user?.id ?? null,
    actorRole: user?.role ?? null,
    detail: { reason, ...detail },
  });
  return auditedError(new AppError('invalid_credentials'));
}

/**
 * Signup with the emailed code (DESIGN.md section 7). The code is checked against the keyed
 * hash stored for this email only; a wrong try counts (5 void the code); activation is one
 * conditional UPDATE, so of concurrent signups with one code exactly one succeeds. Every
 * failure is the same 400, so it says nothing about which accounts exist.
 */
export async function signup(deps: AppDeps, input: SignupInput, ctx: RequestContext): Promise<TokenResponse> {
  const email = normalizeEmail(input.email);
  await countAttempt(deps, ctx, 'auth.signup', email, [
    { rule: RATE_LIMITS.codeEmail, subject: email },
    { rule: RATE_LIMITS.codeIp, subject: ctx.clientIp },
  ]);
  assertPasswordAllowed(deps, input.password, email, 'password');
  const check = await checkCode(deps, 'signup', email, input.access_code);
  if (!check.ok) {
    await audit(deps, ctx, {
      action: 'auth.signup',
      outcome: 'failed',
      errorCode: 'invalid_access_code',
      actorUserId: check.user?.id ?? null,
      actorRole: check.user?.role ?? null,
      detail: { reason: check.reason },
    });
    // the other refusals (password policy, rate limit) are audited by onError
    throw auditedError(new AppError('invalid_access_code'));
  }
  const { user } = check;
  const now = deps.clock.now();
  const passwordHash = await deps.passwords.hash(input.password);
  let begun: SessionGrant | undefined;
  try {
    const grant = await activate(deps, input, ctx, check, passwordHash, now, (written) => {
      begun = written;
    });
    return await issueTokens(deps, grant);
  } catch (error) {
    // a connection lost once COMMIT went out may hide a signup that was stored, its code spent: a
    // retry would be refused, so the database is asked, and the session of a stored one is good
    if (begun && isDatabaseUnreachable(error) && (await signupStored(deps, user.id, passwordHash)))
      return issueTokens(deps, begun);
    if (isCodeSpentMeanwhile(error)) {
      // audited at the account it named, as every other wrong try is
      await audit(deps, ctx, {
        action: 'auth.signup',
        outcome: 'failed',
        errorCode: 'invalid_access_code',
        actorUserId: user.id,
        actorRole: user.role,
        detail: { reason: 'spent' },
      });
      throw auditedError(new AppError('invalid_access_code'));
    }
    throw error;
  }
}

/** Whether this signup's transaction committed: the account is registered with the hash it wrote. */
async function signupStored(deps: AppDeps, userId: string, passwordHash: string): Promise<boolean> {
  try {
    const query = deps.db
      .selectFrom('users')
      .select(['is_registered', 'password_hash'])
      .where('id', '=', userId);
    const row = await afterPendingCommits(query, deps.dialect).executeTakeFirst();
    return row?.is_registered === 1 && row.password_hash === passwordHash;
  } catch {
    return false;
  }
}

/** The signup's one transaction: the account activated with its code spent, audited, and a session begun. */
function activate(
  deps: AppDeps,
  input: SignupInput,
  ctx: RequestContext,
  check: { user: UserRow; hash: string },
  passwordHash: string,
  now: Date,
  onBegun: (grant: SessionGrant) => void,
): Promise<SessionGrant> {
  const { user } = check;
  return deps.db.transaction().execute(async (trx) => {
    const activated = await activateWithCode(trx, {
      id: user.id,
      codeHash: check.hash,
      passwordHash,
      profile: JSON.stringify(input.profile ?? {}),
      at: now.toISOString(),
      maxAttempts: MAX_CODE_ATTEMPTS,
    });
    // a concurrent signup with the same code won: this one fails like any other wrong try
    if (!activated) throw codeSpentMeanwhile();
    await audit(
      deps,
      ctx,
      {
        action: 'auth.signup',
        outcome: 'success',
        actorUserId: user.id,
        actorRole: user.role,
        targetUserId: user.id,
        targetFhirType: FHIR_TYPE_BY_ROLE[user.role],
        targetFhirId: user.fhir_resource_id,
      },
      trx,
    );
    const registered = await findUserById(trx, user.id);
    const grant = await beginSession(deps, registered!, trx);
    onBegun(grant);
    return grant;
  });
}

export interface PasswordChangeInput {
  current_password: string;
  new_password: string;
}

/**
 * A signed-in password change. The current password proves the person at the keyboard: an access
 * token alone (a borrowed device, a stolen token) must not take the account over. Counted like a
 * login, so it cannot be used to guess the password. Every session ends, as after a reset (the
 * token version moves on), and this one starts afresh: the answer is a new token pair.
 */
export async function changePassword(
  deps: AppDeps,
  caller: Caller,
  input: PasswordChangeInput,
  ctx: RequestContext,
): Promise<TokenResponse> {
  const user = await findUserById(deps.db, caller.userId);
  if (!user?.password_hash) throw new AppError('unauthenticated');
  const current = await proveCurrentPassword(deps, user, user.password_hash, input.current_password, ctx);
  // the same password again would change nothing but end every session: a slip, told as one
  if (!passwordTooLong(input.new_password) && normalizePassword(input.new_password) === current)
    throw new AppError('validation_failed', {
      errors: [{ path: 'new_password', message: 'must differ from your current password' }],
    });
  assertPasswordAllowed(deps, input.new_password, user.email, 'new_password');
  const passwordHash = await deps.passwords.hash(input.new_password);
  const now = deps.clock.now();
  const grant = await deps.db.transaction().execute(async (trx) => {
    const account = { id: user.id, tokenVersion: user.token_version, passwordHash, at: now.toISOString() };
    // security: a reset (or deactivation) while the current password was checked wins: this
    // change, proven with the password the reset replaced, would take the account back
    if (!(await replacePassword(trx, account))) throw new AppError('unauthenticated');
    await revokeAllSessions(trx, user.id, 'password_change', now);
    await audit(
      deps,
      ctx,
      {
        action: 'auth.password_change',
        outcome: 'success',
        actorUserId: user.id,
        actorRole: user.role,
        targetUserId: user.id,
      },
      trx,
    );
    const changed = await findUserById(trx, user.id);
    return beginSession(deps, changed!, trx);
  });
  return issueTokens(deps, grant);
}

/**
 * Checks the current password of a password change, counted like a login (so the change cannot
 * be used to guess it) and refunded once proven. Answers the normalized password; a wrong one is
 * audited and refused on its field.
 */
async function proveCurrentPassword(
  deps: AppDeps,
  user: UserRow,
  passwordHash: string,
  given: string,
  ctx: RequestContext,
): Promise<string> {
  const limits = [
    { rule: RATE_LIMITS.loginAccount, subject: user.email },
    { rule: RATE_LIMITS.loginIp, subject: ctx.clientIp },
  ];
  await countAttempt(deps, ctx, 'auth.password_change', user.email, limits);
  const current = passwordTooLong(given) ? undefined : normalizePassword(given);
  if (current === undefined || !(await deps.passwords.verify(passwordHash, current))) {
    await audit(deps, ctx, {
      action: 'auth.password_change',
      outcome: 'failed',
      errorCode: 'validation_failed',
      actorUserId: user.id,
      actorRole: user.role,
      targetUserId: user.id,
      detail: { reason: 'wrong_password' },
    });
    throw auditedError(
      new AppError('validation_failed', {
        errors: [{ path: 'current_password', message: 'is not your current password' }],
      }),
    );
  }
  // the person is proven: the try is no guess at the password, whatever the new one's fate
  await refundHit(deps.db, deps.clock, limits);
  return current;
}

/** Rotates a refresh token; reuse of a rotated one revokes its session and is audited. */
export async function refresh(
  deps: AppDeps,
  refreshToken: string,
  ctx: RequestContext,
): Promise<TokenResponse> {
  const outcome = await rotateRefreshToken(deps, refreshToken);
  if (outcome.kind === 'rotated') return outcome.tokens;
  if (outcome.kind === 'reused') {
    await audit(deps, ctx, {
      action: 'auth.refresh_reuse',
      outcome: 'denied',
      errorCode: 'invalid_refresh_token',
      actorUserId: outcome.userId,
      detail: { session_revoked: true },
    });
    throw auditedError(new AppError('invalid_refresh_token'));
  }
  // one answer for every refusal; the trail tells them apart, at the account of a genuine token
  deps.auditTrail.record({
    action: 'auth.refresh',
    outcome: 'denied',
    errorCode: 'invalid_refresh_token',
    actorUserId: outcome.userId ?? null,
    requestId: ctx.requestId,
    clientIp: ctx.clientIp,
    detail: { reason: outcome.reason },
  });
  throw auditedError(new AppError('invalid_refresh_token'));
}

/**
 * Ends the session a refresh token belongs to, without an access token: the frontend's may have
 * expired, and the session must still end on logout. Unknown or already ended: 401.
 */
export async function logoutWithRefreshToken(
  deps: AppDeps,
  refreshToken: string,
  ctx: RequestContext,
  bearer?: Caller,
): Promise<void> {
  const session = await sessionOfRefreshToken(deps.db, refreshToken);
  // the bearer's session ends whatever the refresh token says (ended already, or another session's)
  if (bearer && bearer.claims.sid !== session?.sessionId) await logout(deps, bearer, ctx);
  if (!session) throw new AppError('invalid_refresh_token');
  await revokeSession(deps.db, session.sessionId, 'logout', deps.clock.now());
  await audit(deps, ctx, {
    action: 'auth.logout',
    outcome: 'success',
    actorUserId: session.userId,
    detail: { via: 'refresh_token' },
  });
}

/** Ends the caller's session: its refresh tokens and every access token it issued. */
export async function logout(deps: AppDeps, caller: Caller, ctx: RequestContext): Promise<void> {
  await revokeSession(deps.db, caller.claims.sid, 'logout', deps.clock.now());
  await audit(deps, ctx, {
    action: 'auth.logout',
    outcome: 'success',
    actorUserId: caller.userId,
    actorRole: caller.role,
  });
}

/** The caller's own account. */
export async function me(deps: AppDeps, caller: Caller): Promise<{ user: UserDto }> {
  const user = await findUserById(deps.db, caller.userId);
  if (!user) throw new AppError('unauthenticated');
  return { user: toUserDto(user) };
}
