import type { Kysely } from 'kysely';

/**
 * Sessions by their end: the housekeeping sweep deletes sessions a day after they ended (rows
 * had been kept for good, one per login), and the active-sessions gauge reads only live ones.
 * Both read every session ever started without it.
 * Frozen: never edit after release.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex('sessions_expires').on('sessions').column('expires_at').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('sessions_expires').execute();
}
