import { type Kysely, sql } from 'kysely';

/**
 * Crash-safe provisioning and a fuller audit trail. Frozen: never edit after release.
 * - `provisioning_intents`: a create is recorded before the FHIR call, so a crash between the
 *   FHIR create and the user row can always be found and finished (or undone) by reconciliation;
 *   a live request holds it with a short, renewed lease.
 * - `idempotency_keys.locked_until` / `intent_id`: an in-progress key is locked only while its
 *   request runs (lease), and points at the intent that reconciliation finishes it with.
 * - `users.display_name`: the greeting of code mails, so a mail never waits for the FHIR server.
 * - `audit_log.patient_id`, `error_code`: access events (who read which patient's data) and the
 *   error code of refusals, both filterable.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('provisioning_intents')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('actor_user_id', 'text', (c) => c.notNull())
    .addColumn('idempotency_key', 'text')
    .addColumn('fhir_type', 'text', (c) => c.notNull())
    .addColumn('email', 'text', (c) => c.notNull())
    .addColumn('display_name', 'text', (c) => c.notNull())
    /** The FHIR resource to create (with the account identifier), JSON. */
    .addColumn('resource', 'text', (c) => c.notNull())
    /** The answer a retry replays: 'slim' (JSON DTO) or 'fhir' (the resource, Location). */
    .addColumn('response_kind', 'text', (c) => c.notNull().check(sql`response_kind in ('slim', 'fhir')`))
    .addColumn('state', 'text', (c) =>
      c.notNull().check(sql`state in ('pending', 'done', 'abandoned', 'orphaned')`),
    )
    .addColumn('fhir_id', 'text')
    .addColumn('user_id', 'text')
    .addColumn('lease_until', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('last_error', 'text')
    .addColumn('request_id', 'text')
    .addColumn('client_ip', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('provisioning_intents_open')
    .on('provisioning_intents')
    .columns(['state', 'lease_until'])
    .execute();

  await db.schema.alterTable('idempotency_keys').addColumn('locked_until', 'text').execute();
  await db.schema.alterTable('idempotency_keys').addColumn('intent_id', 'text').execute();

  await db.schema.alterTable('users').addColumn('display_name', 'text').execute();

  await db.schema.alterTable('audit_log').addColumn('patient_id', 'text').execute();
  await db.schema.alterTable('audit_log').addColumn('error_code', 'text').execute();
  await db.schema
    .createIndex('audit_log_patient')
    .on('audit_log')
    .columns(['patient_id', 'occurred_at'])
    .execute();
  await db.schema
    .createIndex('audit_log_outcome')
    .on('audit_log')
    .columns(['outcome', 'occurred_at'])
    .execute();
  await db.schema
    .createIndex('outbox_lane_due')
    .on('outbox')
    .columns(['kind', 'status', 'next_attempt_at'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('outbox_lane_due').execute();
  await db.schema.dropIndex('audit_log_outcome').execute();
  await db.schema.dropIndex('audit_log_patient').execute();
  await db.schema.alterTable('audit_log').dropColumn('error_code').execute();
  await db.schema.alterTable('audit_log').dropColumn('patient_id').execute();
  await db.schema.alterTable('users').dropColumn('display_name').execute();
  await db.schema.alterTable('idempotency_keys').dropColumn('intent_id').execute();
  await db.schema.alterTable('idempotency_keys').dropColumn('locked_until').execute();
  await db.schema.dropTable('provisioning_intents').execute();
}
