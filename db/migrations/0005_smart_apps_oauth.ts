import { type Kysely, sql } from 'kysely';

/**
 * SMART App Launch (issue 13). Frozen: never edit after release.
 * - `smart_apps`: apps an admin registered (OAuth clients): public or confidential, exact
 *   redirect URIs, the scopes they may be granted; a confidential app's secret only as a hash.
 * - `oauth_store`: what the authorization server (oidc-provider) keeps between requests —
 *   interactions, its login sessions, grants, authorization codes, refresh tokens — one JSON
 *   payload per row, shared by every gateway instance. `consumed_at` makes single use atomic.
 * - `sessions.client_id`: the app a session was granted to (null for /auth/login sessions), so
 *   deactivating an app ends its sessions, and with them its access tokens.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('smart_apps')
    .addColumn('client_id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('client_type', 'text', (c) =>
      c.notNull().check(sql`client_type in ('public', 'confidential')`),
    )
    .addColumn('secret_hash', 'text')
    /** JSON array of exact redirect URIs. */
    .addColumn('redirect_uris', 'text', (c) => c.notNull())
    /** Space-separated scopes the app may be granted. */
    .addColumn('scopes', 'text', (c) => c.notNull())
    .addColumn('is_active', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('oauth_store')
    .addColumn('model', 'text', (c) => c.notNull())
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('grant_id', 'text')
    .addColumn('uid', 'text')
    .addColumn('expires_at', 'text')
    .addColumn('consumed_at', 'text')
    .addPrimaryKeyConstraint('oauth_store_pk', ['model', 'id'])
    .execute();
  await db.schema.createIndex('oauth_store_grant').on('oauth_store').column('grant_id').execute();
  await db.schema.createIndex('oauth_store_uid').on('oauth_store').columns(['model', 'uid']).execute();
  await db.schema.createIndex('oauth_store_expires').on('oauth_store').column('expires_at').execute();

  await db.schema.alterTable('sessions').addColumn('client_id', 'text').execute();
  await db.schema.createIndex('sessions_client').on('sessions').column('client_id').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('sessions_client').execute();
  await db.schema.alterTable('sessions').dropColumn('client_id').execute();
  await db.schema.dropTable('oauth_store').execute();
  await db.schema.dropTable('smart_apps').execute();
}
