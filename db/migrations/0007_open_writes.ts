import type { Kysely } from 'kysely';

/**
 * `open_writes`: a write through the FHIR passthrough is recorded here before it is forwarded and
 * removed in the transaction that audits its outcome. A row whose lease lapsed belongs to a
 * process killed mid-write: the write may have been applied upstream, and reconciliation turns
 * the row into the audit entry the request never wrote (src/audit/openWrites.ts). Frozen: never
 * edit after release.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('open_writes')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('method', 'text', (c) => c.notNull())
    .addColumn('target_fhir_type', 'text')
    .addColumn('target_fhir_id', 'text')
    .addColumn('operation', 'text')
    .addColumn('actor_user_id', 'text')
    .addColumn('actor_role', 'text')
    .addColumn('request_id', 'text')
    .addColumn('client_ip', 'text')
    .addColumn('started_at', 'text', (c) => c.notNull())
    .addColumn('lease_until', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('open_writes_lease').on('open_writes').column('lease_until').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('open_writes').execute();
}
