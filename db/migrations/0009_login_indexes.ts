import { type Kysely, sql } from 'kysely';

/**
 * Indexes for what a login writes and what the sweep deletes (docs/performance.md):
 * - three indexes made partial, over the rows that have the column: a login wrote a page of each
 *   for an empty value (its audit row names no target and no patient, its session no SMART app),
 *   3 of the ~24 pages it added to SQLite's write-ahead log. Every query that uses them asks for a
 *   value (`column = ?`), which implies `is not null`, so SQLite and PostgreSQL still choose them
 *   (tests/db/partialIndexes.test.ts);
 * - sessions by their end, for the sweep that deletes ended sessions and the active-sessions gauge;
 * - outbox_due (status, next_attempt_at) dropped: every statement over the outbox names its lanes
 *   and seeks in outbox_lane_due (kind, status, next_attempt_at), and the index cost every login's
 *   AuditEvent row a page when written and another when delivered.
 * The new indexes are built first and the old ones dropped last: on PostgreSQL (one transaction) a
 * dropped index locks its table against reads too until the commit, a build only against writes;
 * on SQLite (a statement at a time) a start killed halfway finds what exists and goes on.
 * Frozen: never edit after release.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createIndex('audit_log_by_target')
    .ifNotExists()
    .on('audit_log')
    .columns(['target_user_id', 'id'])
    .where(sql.ref('target_user_id'), 'is not', null)
    .execute();
  await db.schema
    .createIndex('audit_log_by_patient')
    .ifNotExists()
    .on('audit_log')
    .columns(['patient_id', 'occurred_at'])
    .where(sql.ref('patient_id'), 'is not', null)
    .execute();
  await db.schema
    .createIndex('sessions_by_client')
    .ifNotExists()
    .on('sessions')
    .column('client_id')
    .where(sql.ref('client_id'), 'is not', null)
    .execute();
  await db.schema.createIndex('sessions_expires').ifNotExists().on('sessions').column('expires_at').execute();
  for (const index of ['audit_log_target', 'audit_log_patient', 'sessions_client', 'outbox_due'])
    await db.schema.dropIndex(index).ifExists().execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema
    .createIndex('audit_log_target')
    .ifNotExists()
    .on('audit_log')
    .columns(['target_user_id', 'id'])
    .execute();
  await db.schema
    .createIndex('audit_log_patient')
    .ifNotExists()
    .on('audit_log')
    .columns(['patient_id', 'occurred_at'])
    .execute();
  await db.schema.createIndex('sessions_client').ifNotExists().on('sessions').column('client_id').execute();
  await db.schema
    .createIndex('outbox_due')
    .ifNotExists()
    .on('outbox')
    .columns(['status', 'next_attempt_at'])
    .execute();
  for (const index of [
    'audit_log_by_target',
    'audit_log_by_patient',
    'sessions_by_client',
    'sessions_expires',
  ])
    await db.schema.dropIndex(index).ifExists().execute();
}
