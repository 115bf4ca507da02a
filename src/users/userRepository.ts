import type { Kysely, Transaction } from 'kysely';
import type { LookupConnection } from '../../db/connection.js';
import { precompiled, precompiledQuery } from '../../db/precompiled.js';
import type { Database, NewUser, Role, UserRow, UserUpdate } from '../../db/schema.js';

/** Users table access. `db` first; rows in, rows out; no logic. */

export type Db = Kysely<Database> | Transaction<Database>;

/**
 * Emails compare case-insensitively and after Unicode compatibility folding, so `Ann@X.org`
 * and `ann@x.org` are one account (the unique index is on this form).
 */
export function normalizeEmail(email: string): string {
  return email.normalize('NFKC').trim().toLowerCase();
}

const userByEmail = precompiled(['email'], (db, user) =>
  db.selectFrom('users').selectAll().where('email', '=', user.email),
);

export async function findUserByEmail(db: Db, email: string): Promise<UserRow | undefined> {
  return (await userByEmail(db, { email: normalizeEmail(email) })).rows[0];
}

// `/auth/me` and every admin action on an account run it: compiled once (5–6 µs less a call)
const userById = precompiled(['id'], (db, user) =>
  db.selectFrom('users').selectAll().where('id', '=', user.id),
);

export async function findUserById(db: Db, id: string): Promise<UserRow | undefined> {
  return (await userById(db, { id })).rows[0];
}

/** The account linked to a FHIR resource, if any: one per role and id (index users_fhir_resource_unique). */
export async function findUserByFhirResource(
  db: Db,
  role: Role,
  fhirId: string,
): Promise<UserRow | undefined> {
  return db
    .selectFrom('users')
    .selectAll()
    .where('role', '=', role)
    .where('fhir_resource_id', '=', fhirId)
    .executeTakeFirst();
}

export async function insertUser(db: Db, user: NewUser): Promise<void> {
  await db
    .insertInto('users')
    .values({ ...user, email: normalizeEmail(user.email) })
    .execute();
}

/**
 * An account an admin created, linked to its FHIR record, waiting for its person to sign up with
 * the code whose keyed hash it holds: inactive until then (no password, not registered).
 */
export async function insertPendingAccount(
  db: Db,
  account: {
    id: string;
    email: string;
    role: Role;
    fhirId: string;
    codeHash: string;
    codeExpiresAt: string;
    displayName: string;
    at: string;
  },
): Promise<void> {
  await insertUser(db, {
    id: account.id,
    email: account.email,
    role: account.role,
    fhir_resource_id: account.fhirId,
    access_code_hash: account.codeHash,
    access_code_expires_at: account.codeExpiresAt,
    is_registered: 0,
    password_hash: null,
    created_by_admin: 1,
    created_at: account.at,
    updated_at: account.at,
    registered_at: null,
    last_login_at: null,
    display_name: account.displayName,
  });
}

export async function updateUser(db: Db, id: string, changes: UserUpdate): Promise<number> {
  const result = await db.updateTable('users').set(changes).where('id', '=', id).executeTakeFirst();
  return Number(result.numUpdatedRows);
}

const changed = (result: { numUpdatedRows: bigint }) => Number(result.numUpdatedRows) === 1;

/**
 * Activates a pending account with the code it was sent: only while that code is still its
 * current one and not worn out, so of two signups racing with the same code one wins.
 */
export async function activateWithCode(
  db: Db,
  account: {
    id: string;
    codeHash: string;
    passwordHash: string;
    profile: string;
    at: string;
    maxAttempts: number;
  },
): Promise<boolean> {
  const result = await db
    .updateTable('users')
    .set({
      password_hash: account.passwordHash,
      is_registered: 1,
      access_code_hash: null,
      access_code_expires_at: null,
      access_code_attempts: 0,
      registered_at: account.at,
      last_login_at: account.at,
      updated_at: account.at,
      profile: account.profile,
    })
    .where('id', '=', account.id)
    .where('is_registered', '=', 0)
    .where('access_code_hash', '=', account.codeHash)
    .where('access_code_attempts', '<', account.maxAttempts)
    .executeTakeFirst();
  return changed(result);
}

/**
 * A new password hash; the token version moves on, so every token issued before is refused, and
 * an emailed reset code dies with the old password. Only while the account still has the token
 * version the change was proven against: false when a reset or deactivation came in between.
 */
export async function replacePassword(
  db: Db,
  account: { id: string; tokenVersion: number; passwordHash: string; at: string },
): Promise<boolean> {
  const result = await db
    .updateTable('users')
    .set((eb) => ({
      password_hash: account.passwordHash,
      token_version: eb('token_version', '+', 1),
      reset_code_hash: null,
      reset_code_expires_at: null,
      updated_at: account.at,
    }))
    .where('id', '=', account.id)
    .where('token_version', '=', account.tokenVersion)
    .where('is_active', '=', 1)
    .executeTakeFirst();
  return changed(result);
}

/** replacePassword through a reset code, which it spends: only while that code is still the account's. */
export async function replacePasswordWithResetCode(
  db: Db,
  account: { id: string; codeHash: string; passwordHash: string; at: string },
): Promise<boolean> {
  const result = await db
    .updateTable('users')
    .set((eb) => ({
      password_hash: account.passwordHash,
      reset_code_hash: null,
      reset_code_expires_at: null,
      reset_code_attempts: 0,
      token_version: eb('token_version', '+', 1),
      updated_at: account.at,
    }))
    .where('id', '=', account.id)
    .where('reset_code_hash', '=', account.codeHash)
    .executeTakeFirst();
  return changed(result);
}

/**
 * Activates or deactivates an account. Deactivation also ends its tokens and voids any code out
 * there (the usual reason: it reached the wrong person), so reactivating cannot bring one back.
 */
export async function setAccountActive(db: Db, id: string, active: boolean, at: string): Promise<void> {
  await db
    .updateTable('users')
    .set((eb) => ({
      is_active: active ? 1 : 0,
      updated_at: at,
      ...(active
        ? {}
        : {
            token_version: eb('token_version', '+', 1),
            access_code_hash: null,
            access_code_expires_at: null,
            reset_code_hash: null,
            reset_code_expires_at: null,
          }),
    }))
    .where('id', '=', id)
    .execute();
}

/** Stores a new code's columns on an account that is (`registered`) or is not yet registered: false when it changed meanwhile. */
export async function storeCode(
  db: Db,
  id: string,
  registered: boolean,
  columns: UserUpdate,
): Promise<boolean> {
  const result = await db
    .updateTable('users')
    .set(columns)
    .where('id', '=', id)
    .where('is_registered', '=', registered ? 1 : 0)
    // deactivation voids codes for good: a code issued from a row read before it must not be stored
    .where('is_active', '=', 1)
    .executeTakeFirst();
  return changed(result);
}

/** One more wrong try on a code, counted only while `hash` is still the stored one. */
export async function countWrongCode(
  db: Db,
  id: string,
  purpose: 'signup' | 'password_reset',
  hash: string,
): Promise<void> {
  const column = purpose === 'signup' ? 'access_code_attempts' : 'reset_code_attempts';
  await db
    .updateTable('users')
    .set((eb) => ({ [column]: eb(column, '+', 1) }))
    .where('id', '=', id)
    .where(purpose === 'signup' ? 'access_code_hash' : 'reset_code_hash', '=', hash)
    .execute();
}

const lastLogin = precompiled(['id', 'at', 'version'], (db, user) =>
  db
    .updateTable('users')
    .set({ last_login_at: user.at })
    .where('id', '=', user.id)
    .where('token_version', '=', user.version)
    .where('is_active', '=', 1),
);

/**
 * Stamps a successful login (every login: its SQL is compiled once), only while the account is as
 * it was when its password was checked: false when a password change, a reset or a deactivation
 * moved its token version on in between.
 */
export async function recordLastLogin(
  db: Db,
  user: { id: string; token_version: number },
  at: Date,
): Promise<boolean> {
  const result = await lastLogin(db, { id: user.id, at: at.toISOString(), version: user.token_version });
  return (result.numAffectedRows ?? 0n) > 0n;
}

/** True for a unique-index violation on SQLite or PostgreSQL (a lost race on the same email). */
export function isUniqueViolation(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === '23505';
}

/** What authenticate checks on every request: the account and the token's session, in one row. */
export interface CallerRow {
  id: string;
  role: UserRow['role'];
  fhir_resource_id: string | null;
  is_active: number;
  is_registered: number;
  token_version: number;
  session_user_id: string | null;
  session_revoked_at: string | null;
  session_expires_at: string | null;
}

// every authenticated request runs it: compiled once per dialect (db/precompiled.ts); the account,
// and the token's session joined by its id (null columns when there is none)
const callerStatement = precompiledQuery(['userId', 'sessionId'], (db, ids) =>
  db
    .selectFrom('users as u')
    .leftJoin('sessions as s', (join) => join.on('s.id', '=', ids.sessionId))
    .select([
      'u.id',
      'u.role',
      'u.fhir_resource_id',
      'u.is_active',
      'u.is_registered',
      'u.token_version',
      's.user_id as session_user_id',
      's.revoked_at as session_revoked_at',
      's.expires_at as session_expires_at',
    ])
    .where('u.id', '=', ids.userId),
);

/**
 * The account `userId` with the session `sessionId` (null columns when there is no such session).
 * `lookups` (SQLite): read on that connection, as committed when the statement runs.
 */
export async function findCaller(
  db: Db,
  userId: string,
  sessionId: string,
  lookups?: LookupConnection,
): Promise<CallerRow | undefined> {
  const statement = callerStatement(db, { userId, sessionId });
  if (lookups) {
    const values = lookups.getValues(statement.sql, statement.parameters);
    return values && callerRowOf(values);
  }
  return (await db.executeQuery(statement)).rows[0] as CallerRow | undefined;
}

/**
 * A caller row from its values in the order of callerStatement's select list. Security: a column
 * read from another's place would check the wrong fact (is_active for is_registered lets a
 * deactivated account in); tests/db/lookups.test.ts gives every column a value of its own.
 */
function callerRowOf(values: readonly unknown[]): CallerRow {
  return {
    id: values[0],
    role: values[1],
    fhir_resource_id: values[2],
    is_active: values[3],
    is_registered: values[4],
    token_version: values[5],
    session_user_id: values[6],
    session_revoked_at: values[7],
    session_expires_at: values[8],
  } as CallerRow;
}
