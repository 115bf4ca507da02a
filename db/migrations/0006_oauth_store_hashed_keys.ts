import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';

/**
 * The authorization server's rows keyed by the SHA-256 of oidc-provider's id, no longer by the id
 * itself: the ids of codes, refresh tokens and login sessions are bearer secrets, and a copy of
 * the database must not redeem them (src/oauth/adapter.ts, `oauthStoreKey`); nor does the payload
 * keep the id as its `jti`. Rows written before are re-keyed, so refresh tokens issued before the
 * upgrade keep working. Frozen: never edit after release (the hash is written out here, not
 * imported, for that reason).
 */
export async function up(db: Kysely<any>): Promise<void> {
  const rows = await db.selectFrom('oauth_store').select(['model', 'id', 'payload']).execute();
  for (const { model, id, payload } of rows as { model: string; id: string; payload: string }[]) {
    const key = createHash('sha256').update(id).digest('base64url');
    // the payload's jti is the id again: the adapter gives it back from the id it is asked for
    const { jti: _id, ...kept } = JSON.parse(payload) as Record<string, unknown>;
    await db
      .updateTable('oauth_store')
      .set({ id: key, payload: JSON.stringify(kept) })
      .where('model', '=', model)
      .where('id', '=', id)
      .execute();
  }
}

/** The ids cannot be recovered from their hashes: going back ends every SMART launch, code and refresh token. */
export async function down(db: Kysely<any>): Promise<void> {
  await db.deleteFrom('oauth_store').execute();
}
