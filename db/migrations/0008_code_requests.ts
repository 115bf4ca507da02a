import type { Kysely } from 'kysely';

/**
 * `code_requests`: a "send me a code" request (resend a signup code, forgot password), recorded
 * before its 202 whatever the email, and removed in the transaction that queues the code's mail
 * (or once the account proves not eligible). A row whose lease lapsed belongs to a process killed
 * after the answer, or to a try that failed: it is fulfilled again (src/auth/codeRequests.ts).
 * Frozen: never edit after release.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('code_requests')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('purpose', 'text', (c) => c.notNull())
    .addColumn('email', 'text', (c) => c.notNull())
    .addColumn('request_id', 'text')
    .addColumn('client_ip', 'text')
    .addColumn('requested_at', 'text', (c) => c.notNull())
    .addColumn('lease_until', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('code_requests_lease').on('code_requests').column('lease_until').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('code_requests').execute();
}
