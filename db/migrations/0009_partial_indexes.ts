import { type Kysely, sql } from 'kysely';

/**
 * Three indexes made partial, over the rows that have the column: a login wrote a page of each
 * for an empty value (its audit row names no target and no patient, its session no SMART app),
 * 3 of the ~24 pages a login added to SQLite's write-ahead log (docs/performance.md). Every
 * query that uses them asks for a value (`column = ?`), which implies `is not null`, so SQLite
 * and PostgreSQL still choose them (tests/db/partialIndexes.test.ts).
 * Frozen: never edit after release.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('audit_log_target').execute();
  await db.schema
    .createIndex('audit_log_target')
    .on('audit_log')
    .columns(['target_user_id', 'id'])
    .where(sql.ref('target_user_id'), 'is not', null)
    .execute();
  await db.schema.dropIndex('audit_log_patient').execute();
  await db.schema
    .createIndex('audit_log_patient')
    .on('audit_log')
    .columns(['patient_id', 'occurred_at'])
    .where(sql.ref('patient_id'), 'is not', null)
    .execute();
  await db.schema.dropIndex('sessions_client').execute();
  await db.schema
    .createIndex('sessions_client')
    .on('sessions')
    .column('client_id')
    .where(sql.ref('client_id'), 'is not', null)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('sessions_client').execute();
  await db.schema.createIndex('sessions_client').on('sessions').column('client_id').execute();
  await db.schema.dropIndex('audit_log_patient').execute();
  await db.schema
    .createIndex('audit_log_patient')
    .on('audit_log')
    .columns(['patient_id', 'occurred_at'])
    .execute();
  await db.schema.dropIndex('audit_log_target').execute();
  await db.schema.createIndex('audit_log_target').on('audit_log').columns(['target_user_id', 'id']).execute();
}
