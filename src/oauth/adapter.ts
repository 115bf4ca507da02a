import { createHash } from 'node:crypto';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import { errors } from 'oidc-provider';
import type { SmartAppRow } from '../../db/schema.js';
import type { Db } from '../users/userRepository.js';
import { findSmartApp } from './smartAppRepository.js';

/**
 * oidc-provider's storage (https://github.com/panva/node-oidc-provider/blob/main/example/my_adapter.js)
 * on our database, so every gateway instance shares interactions, grants, codes and refresh
 * tokens (SQLite or PostgreSQL, table `oauth_store`, migration 0005). Clients are not stored
 * here: they are the SMART apps admins register (`smart_apps`), and an inactive app is not found.
 *
 * Single use is atomic: `consume` marks a row with one conditional UPDATE, so of two requests
 * racing with one code or refresh token exactly one wins; the other is treated as reuse — the
 * whole grant is revoked (RFC 9700 section 4.14.2, and RFC 6749 section 4.1.2 for codes).
 */

export interface AdapterHooks {
  /** A grant was destroyed (reuse, revocation): its gateway session ends with it. */
  grantRevoked(grantId: string): Promise<void>;
}

/** What oidc-provider needs of a registered app (OpenID Connect Dynamic Client Registration metadata). */
function clientMetadataOf(app: SmartAppRow): AdapterPayload | undefined {
  if (app.is_active !== 1) return undefined;
  const confidential = app.client_type === 'confidential';
  return {
    client_id: app.client_id,
    client_name: app.name,
    redirect_uris: JSON.parse(app.redirect_uris) as string[],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    // SMART's client-confidential-symmetric is HTTP Basic; public apps have no secret at all
    token_endpoint_auth_method: confidential ? 'client_secret_basic' : 'none',
    // the hash, never the secret: Client.prototype.compareClientSecret is replaced to compare hashes
    ...(confidential && app.secret_hash ? { client_secret: app.secret_hash } : {}),
    id_token_signed_response_alg: 'ES256',
    application_type: 'web',
  };
}

const nowIso = () => new Date().toISOString();

/**
 * The row key of what oidc-provider stores under `id`: its SHA-256. The ids of codes, refresh
 * tokens and login sessions are bearer secrets (DESIGN.md: refresh tokens stored hashed), so a
 * copy of the database (a dump, a backup, a replica) must not redeem them. oidc-provider always
 * hands the adapter the value itself, so the hash is invisible to it. A Grant's id is not secret
 * and stays readable in `grant_id`, where revocation looks for it.
 */
export function oauthStoreKey(id: string): string {
  return createHash('sha256').update(id).digest('base64url');
}

class DatabaseAdapter implements Adapter {
  constructor(
    private readonly db: Db,
    private readonly model: string,
    private readonly hooks: AdapterHooks,
  ) {}

  async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
    // the payload's `jti` is the id itself: kept out of the row, given back by `find`
    const { jti: _id, ...kept } = payload;
    const row = {
      payload: JSON.stringify(kept),
      grant_id: typeof payload.grantId === 'string' ? payload.grantId : null,
      uid: typeof payload.uid === 'string' ? payload.uid : null,
      expires_at: expiresIn ? new Date(Date.now() + expiresIn * 1000).toISOString() : null,
    };
    await this.db
      .insertInto('oauth_store')
      .values({ model: this.model, id: oauthStoreKey(id), consumed_at: null, ...row })
      .onConflict((oc) => oc.columns(['model', 'id']).doUpdateSet(row))
      .execute();
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    // a NUL in a client_id or token of a form body is nothing we issued, and PostgreSQL cannot compare it
    if (id.includes('\0')) return undefined;
    if (this.model === 'Client') {
      const app = await findSmartApp(this.db, id);
      return app ? clientMetadataOf(app) : undefined;
    }
    const payload = await this.findWhere('id', oauthStoreKey(id));
    return payload && { ...payload, jti: id };
  }

  /** A login session by its uid, without its id (the cookie's value): oidc-provider only reads what it finds this way. */
  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    if (uid.includes('\0')) return undefined;
    return this.findWhere('uid', uid);
  }

  async findByUserCode(): Promise<AdapterPayload | undefined> {
    return undefined; // the device flow is not enabled
  }

  private async findWhere(column: 'id' | 'uid', value: string): Promise<AdapterPayload | undefined> {
    const row = await this.db
      .selectFrom('oauth_store')
      .select(['payload', 'expires_at', 'consumed_at'])
      .where('model', '=', this.model)
      .where(column, '=', value)
      .executeTakeFirst();
    if (!row || (row.expires_at !== null && row.expires_at <= nowIso())) return undefined;
    const payload = JSON.parse(row.payload) as AdapterPayload;
    if (row.consumed_at) payload.consumed = Math.floor(Date.parse(row.consumed_at) / 1000);
    return payload;
  }

  async consume(id: string): Promise<void> {
    const key = oauthStoreKey(id);
    const marked = await this.db
      .updateTable('oauth_store')
      .set({ consumed_at: nowIso() })
      .where('model', '=', this.model)
      .where('id', '=', key)
      .where('consumed_at', 'is', null)
      .executeTakeFirst();
    if (Number(marked.numUpdatedRows) === 1) return;
    // another request used it first: this use is a replay, so the grant behind it is revoked
    const row = await this.db
      .selectFrom('oauth_store')
      .select('grant_id')
      .where('model', '=', this.model)
      .where('id', '=', key)
      .executeTakeFirst();
    if (row?.grant_id) await this.revokeGrant(row.grant_id);
    throw new errors.InvalidGrant('grant request is invalid');
  }

  async destroy(id: string): Promise<void> {
    await this.db
      .deleteFrom('oauth_store')
      .where('model', '=', this.model)
      .where('id', '=', oauthStoreKey(id))
      .execute();
    if (this.model === 'Grant') await this.hooks.grantRevoked(id);
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    await this.db
      .deleteFrom('oauth_store')
      .where('model', '=', this.model)
      .where('grant_id', '=', grantId)
      .execute();
  }

  private async revokeGrant(grantId: string): Promise<void> {
    await this.db
      .deleteFrom('oauth_store')
      .where((eb) =>
        eb.or([
          eb('grant_id', '=', grantId),
          eb.and([eb('model', '=', 'Grant'), eb('id', '=', oauthStoreKey(grantId))]),
        ]),
      )
      .execute();
    await this.hooks.grantRevoked(grantId);
  }
}

/** The adapter factory oidc-provider calls once per model name. */
export function databaseAdapter(db: Db, hooks: AdapterHooks) {
  return (model: string): Adapter => new DatabaseAdapter(db, model, hooks);
}
