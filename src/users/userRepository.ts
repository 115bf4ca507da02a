import type { Kysely, Transaction } from 'kysely';
import type { Database, NewUser, UserRow, UserUpdate } from '../../db/schema.js';

/** Users table access. `db` first; rows in, rows out; no logic. */

export type Db = Kysely<Database> | Transaction<Database>;

/**
 * Emails compare case-insensitively and after Unicode compatibility folding, so `Ann@X.org`
 * and `ann@x.org` are one account (the unique index is on this form).
 */
export function normalizeEmail(email: string): string {
  return email.normalize('NFKC').trim().toLowerCase();
}

export function findUserByEmail(db: Db, email: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('email', '=', normalizeEmail(email)).executeTakeFirst();
}

export function findUserById(db: Db, id: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function insertUser(db: Db, user: NewUser): Promise<void> {
  await db
    .insertInto('users')
    .values({ ...user, email: normalizeEmail(user.email) })
    .execute();
}

export async function updateUser(db: Db, id: string, changes: UserUpdate): Promise<number> {
  const result = await db.updateTable('users').set(changes).where('id', '=', id).executeTakeFirst();
  return Number(result.numUpdatedRows);
}

/** True for a unique-index violation on SQLite or PostgreSQL (a lost race on the same email). */
export function isUniqueViolation(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === '23505';
}
