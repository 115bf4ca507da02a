import { createHash } from 'node:crypto';
import { precompiledInsert } from '../../db/precompiled.js';
import type { UserRow } from '../../db/schema.js';
import type { AppDeps } from '../http/types.js';
import { uuidv7 } from '../ids.js';
import { canSignIn } from '../users/accountStatus.js';
import { toUserDto, type UserDto } from '../users/userDto.js';
import { type Db, findUserById } from '../users/userRepository.js';
import { isRefreshTokenShaped, makeRefreshToken, signedIdsOf, successorIdTime } from './refreshTokens.js';
import { issueAccessToken, tokenSettingsOf } from './tokens.js';

/**
 * Sessions and refresh tokens (DESIGN.md section 4). Each login or signup starts a session;
 * its refresh tokens are opaque to clients (refreshTokens.ts), stored as SHA-256 hashes, and
 * rotate on every use.
 * Presenting a token that was already rotated means it was copied: the whole session is
 * revoked (OAuth 2.0 Security BCP, RFC 9700 section 4.14.2). Access tokens carry the session
 * id, so revoking a session also ends its access tokens at once.
 */

export interface TokenResponse {
  token: string;
  token_type: 'Bearer';
  expires_in: number;
  refresh_token: string;
  user: UserDto;
}

// every login and refresh writes these rows: their SQL is compiled once
const insertRefreshRow = precompiledInsert('refresh_tokens', [
  'id',
  'session_id',
  'token_hash',
  'created_at',
  'expires_at',
  'used_at',
]);
const insertSessionRow = precompiledInsert('sessions', [
  'id',
  'user_id',
  'created_at',
  'expires_at',
  'revoked_at',
  'revoked_reason',
]);

const hashRefreshToken = (token: string) => createHash('sha256').update(token).digest('hex');

/** A session's next refresh token, stored with `db`; `idTime`: the ms its row id is made at (successorIdTime). */
async function insertRefreshToken(
  deps: AppDeps,
  db: Db,
  sessionId: string,
  now: Date,
  sessionEnd: Date,
  idTime = now.getTime(),
) {
  const id = uuidv7(idTime);
  const token = makeRefreshToken(deps.secrets.refreshTokenKey, sessionId, id);
  const expires = Math.min(
    now.getTime() + deps.config.jwt.refreshTokenTtlSeconds * 1000,
    sessionEnd.getTime(),
  );
  await insertRefreshRow(db, {
    id,
    session_id: sessionId,
    token_hash: hashRefreshToken(token),
    created_at: now.toISOString(),
    expires_at: new Date(expires).toISOString(),
    used_at: null,
  });
  return token;
}

/**
 * A session whose rows are written in the caller's transaction. Its access token is signed once
 * that transaction has committed (issueTokens): signing inside would hold the write transaction,
 * and with it SQLite's write lock, for the signature's CPU time and its await. Should the signing
 * fail after the commit (a broken key: it is checked at start), the request answers 500 and the
 * session is left with no token anyone holds.
 */
export interface SessionGrant {
  readonly user: UserRow;
  readonly sessionId: string;
  readonly refreshToken: string;
  readonly issuedAt: Date;
}

/** A session's access token, signed on libuv's thread pool. */
async function signSessionToken(deps: AppDeps, user: UserRow, sessionId: string, issuedAt: Date) {
  const issued = await issueAccessToken(
    deps.signingKey,
    tokenSettingsOf(deps.config.jwt),
    user,
    sessionId,
    issuedAt,
  );
  return issued.token;
}

function tokenResponse(deps: AppDeps, user: UserRow, token: string, refreshToken: string): TokenResponse {
  return {
    token,
    token_type: 'Bearer',
    expires_in: deps.config.jwt.accessTokenTtlSeconds,
    refresh_token: refreshToken,
    user: toUserDto(user),
  };
}

/** The token pair of a committed session: its access token signed, its refresh token as stored. */
export async function issueTokens(deps: AppDeps, grant: SessionGrant): Promise<TokenResponse> {
  const token = await signSessionToken(deps, grant.user, grant.sessionId, grant.issuedAt);
  return tokenResponse(deps, grant.user, token, grant.refreshToken);
}

/**
 * Begins a session for a user who just proved who they are: writes it and its first refresh
 * token with `db` (the caller's transaction). The tokens come from issueTokens after the commit.
 */
export async function beginSession(deps: AppDeps, user: UserRow, db: Db): Promise<SessionGrant> {
  const now = deps.clock.now();
  const sessionId = uuidv7(now.getTime());
  const sessionEnd = new Date(now.getTime() + deps.config.jwt.sessionMaxAgeSeconds * 1000);
  await insertSessionRow(db, {
    id: sessionId,
    user_id: user.id,
    created_at: now.toISOString(),
    expires_at: sessionEnd.toISOString(),
    revoked_at: null,
    revoked_reason: null,
  });
  const refreshToken = await insertRefreshToken(deps, db, sessionId, now, sessionEnd);
  return { user, sessionId, refreshToken, issuedAt: now };
}

export async function revokeSession(db: Db, sessionId: string, reason: string, now: Date): Promise<boolean> {
  const result = await db
    .updateTable('sessions')
    .set({ revoked_at: now.toISOString(), revoked_reason: reason })
    .where('id', '=', sessionId)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Ends every session of a user (password reset, deactivation). */
export async function revokeAllSessions(db: Db, userId: string, reason: string, now: Date): Promise<void> {
  await db
    .updateTable('sessions')
    .set({ revoked_at: now.toISOString(), revoked_reason: reason })
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .execute();
}

/**
 * The session a refresh token belongs to, while that session lives: used, spent or expired
 * tokens count too, so a client whose access token expired can still end its session.
 */
export async function sessionOfRefreshToken(
  db: Db,
  presented: string,
): Promise<{ sessionId: string; userId: string } | undefined> {
  if (!isRefreshTokenShaped(presented)) return undefined;
  const row = await db
    .selectFrom('refresh_tokens')
    .innerJoin('sessions', 'sessions.id', 'refresh_tokens.session_id')
    .select(['sessions.id as session_id', 'sessions.user_id as user_id'])
    .where('refresh_tokens.token_hash', '=', hashRefreshToken(presented))
    .where('sessions.revoked_at', 'is', null)
    .executeTakeFirst();
  return row ? { sessionId: row.session_id, userId: row.user_id } : undefined;
}

/** Why a refresh token was refused: as authenticate names an access token's (docs/security.md). */
export type RefreshRefusal = 'invalid' | 'expired' | 'revoked_session' | 'unknown_user' | 'inactive_user';

export type RefreshOutcome =
  | { readonly kind: 'rotated'; readonly tokens: TokenResponse; readonly userId: string }
  | { readonly kind: 'reused'; readonly userId: string; readonly sessionId: string }
  /** `userId`: the account of a genuine token (for the audit), when it still exists. */
  | { readonly kind: 'invalid'; readonly reason: RefreshRefusal; readonly userId?: string };

const NOT_OURS: RefreshOutcome = { kind: 'invalid', reason: 'invalid' };

/**
 * Exchanges a refresh token for a new pair. The old token is marked used by one conditional
 * update, so of two concurrent uses exactly one rotates and the other counts as reuse.
 */
export async function rotateRefreshToken(deps: AppDeps, presented: string): Promise<RefreshOutcome> {
  if (!isRefreshTokenShaped(presented)) return NOT_OURS;
  const now = deps.clock.now();
  const row = await deps.db
    .selectFrom('refresh_tokens')
    .innerJoin('sessions', 'sessions.id', 'refresh_tokens.session_id')
    .select([
      'refresh_tokens.id as id',
      'refresh_tokens.session_id as session_id',
      'refresh_tokens.expires_at as expires_at',
      'refresh_tokens.used_at as used_at',
      'sessions.user_id as user_id',
      'sessions.expires_at as session_expires_at',
      'sessions.revoked_at as revoked_at',
    ])
    .where('refresh_tokens.token_hash', '=', hashRefreshToken(presented))
    .executeTakeFirst();
  if (!row) return sweptTokenOutcome(deps, presented, now);
  const userId = row.user_id;
  if (row.revoked_at) return { kind: 'invalid', reason: 'revoked_session', userId };
  // a spent token is reuse also once it has expired: a thief who rotated it first keeps the
  // session's newer tokens, and the client's late retry of the old one must end them
  if (row.used_at) {
    await revokeSession(deps.db, row.session_id, 'refresh_token_reuse', now);
    return { kind: 'reused', userId: row.user_id, sessionId: row.session_id };
  }
  if (row.expires_at <= now.toISOString()) return { kind: 'invalid', reason: 'expired', userId };
  const user = await findUserById(deps.db, row.user_id);
  if (!user) return { kind: 'invalid', reason: 'unknown_user' };
  if (!canSignIn(user)) return { kind: 'invalid', reason: 'inactive_user', userId };

  // signed before the rotation, outside its transaction: a signature failing after the commit
  // would leave the client holding only a used token, whose retry reads as theft (reuse)
  const token = await signSessionToken(deps, user, row.session_id, now);
  const rotated = await deps.db.transaction().execute(async (trx) => {
    const marked = await trx
      .updateTable('refresh_tokens')
      .set({ used_at: now.toISOString() })
      .where('id', '=', row.id)
      .where('used_at', 'is', null)
      .executeTakeFirst();
    if (Number(marked.numUpdatedRows) !== 1) {
      await revokeSession(trx, row.session_id, 'refresh_token_reuse', now);
      return undefined;
    }
    return insertRefreshToken(
      deps,
      trx,
      row.session_id,
      now,
      new Date(row.session_expires_at),
      successorIdTime(row.id, now.getTime()),
    );
  });
  if (rotated === undefined) return { kind: 'reused', userId: row.user_id, sessionId: row.session_id };
  return { kind: 'rotated', tokens: tokenResponse(deps, user, token, rotated), userId: user.id };
}

/**
 * A token no row holds: a guess, or one of ours whose row the sweep deleted once it expired. Ours
 * (its HMAC says so) with a later token of its session still stored was rotated: its return is
 * reuse, and a thief who rotated it first keeps the session no longer. Ours without a later one
 * was its session's last: expired.
 */
async function sweptTokenOutcome(deps: AppDeps, presented: string, now: Date): Promise<RefreshOutcome> {
  const ids = signedIdsOf(deps.secrets.refreshTokenKey, presented);
  if (!ids) return NOT_OURS;
  const session = await deps.db
    .selectFrom('sessions')
    .select(['user_id', 'revoked_at'])
    .where('id', '=', ids.sessionId)
    .executeTakeFirst();
  if (!session) return NOT_OURS;
  const userId = session.user_id;
  if (session.revoked_at) return { kind: 'invalid', reason: 'revoked_session', userId };
  const later = await deps.db
    .selectFrom('refresh_tokens')
    .select('id')
    .where('session_id', '=', ids.sessionId)
    .where('id', '>', ids.tokenId)
    .limit(1)
    .executeTakeFirst();
  if (!later) return { kind: 'invalid', reason: 'expired', userId };
  await revokeSession(deps.db, ids.sessionId, 'refresh_token_reuse', now);
  return { kind: 'reused', userId, sessionId: ids.sessionId };
}
