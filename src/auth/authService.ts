import { writeAudit } from '../audit/auditService.js';
import { AppError } from '../errors.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import { toUserDto, type UserDto } from '../users/userDto.js';
import { findUserByEmail, findUserById, updateUser } from '../users/userRepository.js';
import { normalizePassword, PASSWORD_MAX_LENGTH } from './passwords.js';
import { issueAccessToken } from './tokens.js';

export interface LoginInput {
  email: string;
  password: string;
}

export interface TokenResponse {
  token: string;
  token_type: 'Bearer';
  expires_in: number;
  user: UserDto;
}

type LoginFailure = 'unknown_email' | 'wrong_password' | 'not_registered' | 'deactivated';

export function tokenSettings(deps: AppDeps) {
  return {
    issuer: deps.config.jwt.issuer,
    audience: deps.config.jwt.audience,
    ttlSeconds: deps.config.jwt.accessTokenTtlSeconds,
  };
}

/**
 * Email + password login. Every failure — unknown email, wrong password, pending or
 * deactivated account — is the same 401 with the same body, and costs one argon2
 * verification, so neither the answer nor its timing says which accounts exist.
 */
export async function login(deps: AppDeps, input: LoginInput, ctx: RequestContext): Promise<TokenResponse> {
  const password = normalizePassword(input.password);
  // refused before hashing: an attacker must not make us hash megabytes
  if (password.length > PASSWORD_MAX_LENGTH) throw new AppError('invalid_credentials');
  const user = await findUserByEmail(deps.db, input.email);
  let failure: LoginFailure | undefined;
  if (!user?.password_hash) {
    // hash a dummy password for unknown emails so timing does not reveal which accounts exist
    await deps.passwords.verifyDummy(password);
    failure = user ? 'not_registered' : 'unknown_email';
  } else if (!(await deps.passwords.verify(user.password_hash, password))) {
    failure = 'wrong_password';
  } else if (user.is_registered !== 1) {
    failure = 'not_registered';
  } else if (user.is_active !== 1) {
    failure = 'deactivated';
  }
  if (failure || !user) {
    await writeAudit(deps.db, deps.clock, {
      action: 'auth.login',
      outcome: 'failed',
      actorUserId: user?.id ?? null,
      actorRole: user?.role ?? null,
      requestId: ctx.requestId,
      clientIp: ctx.clientIp,
      detail: { reason: failure ?? 'unknown_email' },
    });
    throw new AppError('invalid_credentials');
  }
  const now = deps.clock.now();
  await updateUser(deps.db, user.id, { last_login_at: now.toISOString() });
  await writeAudit(deps.db, deps.clock, {
    action: 'auth.login',
    outcome: 'success',
    actorUserId: user.id,
    actorRole: user.role,
    requestId: ctx.requestId,
    clientIp: ctx.clientIp,
  });
  const issued = await issueAccessToken(deps.signingKey, tokenSettings(deps), user, now);
  return {
    token: issued.token,
    token_type: 'Bearer',
    expires_in: tokenSettings(deps).ttlSeconds,
    user: toUserDto(user),
  };
}

/** The caller's own account. */
export async function me(deps: AppDeps, caller: Caller): Promise<{ user: UserDto }> {
  const user = await findUserById(deps.db, caller.userId);
  if (!user) throw new AppError('unauthenticated');
  return { user: toUserDto(user) };
}
