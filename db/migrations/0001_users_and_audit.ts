import { type Kysely, SqliteAdapter, sql } from 'kysely';

/** Users (DESIGN.md section 5) and the append-only audit log. Frozen: never edit after release. */

const isSqlite = (db: Kysely<any>) => db.getExecutor().adapter instanceof SqliteAdapter;

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('users')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('email', 'text', (c) => c.notNull())
    .addColumn('role', 'text', (c) => c.notNull().check(sql`role in ('admin', 'patient', 'practitioner')`))
    .addColumn('fhir_resource_id', 'text')
    .addColumn('access_code_hash', 'text')
    .addColumn('access_code_expires_at', 'text')
    .addColumn('access_code_attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('is_registered', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('password_hash', 'text')
    .addColumn('created_by_admin', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('is_active', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('token_version', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('profile', 'text', (c) => c.notNull().defaultTo('{}'))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('registered_at', 'text')
    .addColumn('last_login_at', 'text')
    .execute();
  // emails are normalised (trimmed, NFKC, lower-cased) before they reach the table, so a plain unique index suffices
  await db.schema.createIndex('users_email_unique').on('users').column('email').unique().execute();
  await db.schema
    .createIndex('users_fhir_resource_unique')
    .on('users')
    .columns(['role', 'fhir_resource_id'])
    .unique()
    .where(sql.ref('fhir_resource_id'), 'is not', null)
    .execute();

  await db.schema
    .createTable('audit_log')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('occurred_at', 'text', (c) => c.notNull())
    .addColumn('actor_user_id', 'text')
    .addColumn('actor_role', 'text')
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('outcome', 'text', (c) => c.notNull().check(sql`outcome in ('success', 'denied', 'failed')`))
    .addColumn('target_user_id', 'text')
    .addColumn('target_fhir_type', 'text')
    .addColumn('target_fhir_id', 'text')
    .addColumn('request_id', 'text')
    .addColumn('client_ip', 'text')
    .addColumn('detail', 'text')
    .execute();
  await db.schema.createIndex('audit_log_action').on('audit_log').columns(['action', 'id']).execute();
  await db.schema.createIndex('audit_log_actor').on('audit_log').columns(['actor_user_id', 'id']).execute();
  await db.schema.createIndex('audit_log_target').on('audit_log').columns(['target_user_id', 'id']).execute();

  // append-only: the database itself refuses to change or remove an audit entry
  if (isSqlite(db)) {
    await sql`create trigger audit_log_no_update before update on audit_log
      begin select raise(abort, 'audit_log is append-only'); end`.execute(db);
    await sql`create trigger audit_log_no_delete before delete on audit_log
      begin select raise(abort, 'audit_log is append-only'); end`.execute(db);
  } else {
    await sql`create function audit_log_append_only() returns trigger language plpgsql as $$
      begin raise exception 'audit_log is append-only'; end $$`.execute(db);
    await sql`create trigger audit_log_no_change before update or delete on audit_log
      for each row execute function audit_log_append_only()`.execute(db);
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('audit_log').execute();
  if (!isSqlite(db)) await sql`drop function if exists audit_log_append_only()`.execute(db);
  await db.schema.dropTable('users').execute();
}
