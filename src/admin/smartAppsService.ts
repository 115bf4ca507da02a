import type { SmartAppRow } from '../../db/schema.js';
import { writeAudit } from '../audit/auditService.js';
import { AppError } from '../errors.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import { uuidv7 } from '../ids.js';
import { revokeAppSessions } from '../oauth/accounts.js';
import { findSmartApp, hashClientSecret, newClientSecret } from '../oauth/smartAppRepository.js';

/**
 * Registered SMART apps (OAuth clients), managed by admins: register, list, read, change,
 * deactivate. A confidential app's secret is generated here, returned once, and stored only as
 * a hash. Every call is audited. Deactivating an app, or changing the scopes it may have, ends
 * every session granted to it: its access and refresh tokens stop working at once.
 */

export interface SmartAppDto {
  client_id: string;
  name: string;
  type: 'public' | 'confidential';
  redirect_uris: string[];
  scopes: string[];
  active: boolean;
  created_at: string;
  updated_at: string;
}

export interface NewSmartApp {
  name: string;
  type: 'public' | 'confidential';
  redirect_uris: string[];
  scopes: string[];
}

export interface SmartAppChange {
  name?: string | undefined;
  redirect_uris?: string[] | undefined;
  scopes?: string[] | undefined;
  active?: boolean | undefined;
}

/** What an admin sees of an app: never the secret or its hash. */
function toSmartAppDto(app: SmartAppRow): SmartAppDto {
  return {
    client_id: app.client_id,
    name: app.name,
    type: app.client_type,
    redirect_uris: JSON.parse(app.redirect_uris) as string[],
    scopes: app.scopes.split(' ').filter(Boolean),
    active: app.is_active === 1,
    created_at: app.created_at,
    updated_at: app.updated_at,
  };
}

function auditApp(
  deps: AppDeps,
  actor: Caller,
  ctx: RequestContext,
  action: string,
  detail: Record<string, string | boolean>,
) {
  return writeAudit(deps.db, deps.clock, {
    action,
    outcome: 'success',
    actorUserId: actor.userId,
    actorRole: actor.role,
    requestId: ctx.requestId,
    clientIp: ctx.clientIp,
    detail,
  });
}

/** Registers an app; a confidential one gets its secret in this answer only. */
export async function registerSmartApp(
  deps: AppDeps,
  actor: Caller,
  ctx: RequestContext,
  input: NewSmartApp,
): Promise<SmartAppDto & { client_secret?: string }> {
  const now = deps.clock.now().toISOString();
  const secret = input.type === 'confidential' ? newClientSecret() : undefined;
  const row: SmartAppRow = {
    client_id: uuidv7(),
    name: input.name,
    client_type: input.type,
    secret_hash: secret ? hashClientSecret(secret) : null,
    redirect_uris: JSON.stringify(input.redirect_uris),
    scopes: [...new Set(input.scopes)].join(' '),
    is_active: 1,
    created_by: actor.userId,
    created_at: now,
    updated_at: now,
  };
  await deps.db.insertInto('smart_apps').values(row).execute();
  await auditApp(deps, actor, ctx, 'smart_apps.create', { client_id: row.client_id, type: input.type });
  return { ...toSmartAppDto(row), ...(secret ? { client_secret: secret } : {}) };
}

/** Every registered app, newest first (a deployment has a handful). */
export async function listSmartApps(deps: AppDeps, actor: Caller, ctx: RequestContext) {
  const rows = await deps.db.selectFrom('smart_apps').selectAll().orderBy('client_id', 'desc').execute();
  await auditApp(deps, actor, ctx, 'smart_apps.list', {});
  return { apps: rows.map(toSmartAppDto) };
}

async function appOrNotFound(deps: AppDeps, clientId: string): Promise<SmartAppRow> {
  const app = await findSmartApp(deps.db, clientId);
  if (!app) throw new AppError('not_found', { detail: 'No such app.' });
  return app;
}

export async function getSmartApp(deps: AppDeps, actor: Caller, ctx: RequestContext, clientId: string) {
  const app = await appOrNotFound(deps, clientId);
  await auditApp(deps, actor, ctx, 'smart_apps.read', { client_id: clientId });
  return toSmartAppDto(app);
}

/** Whether two space-separated scope lists hold the same scopes, in whatever order. */
function sameScopes(a: string, b: string): boolean {
  const left = new Set(a.split(' '));
  const right = new Set(b.split(' '));
  return left.size === right.size && [...left].every((scope) => right.has(scope));
}

/** Changes an app; deactivating it or changing its scopes ends every session granted to it. */
export async function changeSmartApp(
  deps: AppDeps,
  actor: Caller,
  ctx: RequestContext,
  clientId: string,
  change: SmartAppChange,
): Promise<SmartAppDto> {
  const app = await appOrNotFound(deps, clientId);
  const scopes = change.scopes ? [...new Set(change.scopes)].join(' ') : undefined;
  const endsSessions = change.active === false || (scopes !== undefined && !sameScopes(scopes, app.scopes));
  await deps.db.transaction().execute(async (trx) => {
    await trx
      .updateTable('smart_apps')
      .set({
        ...(change.name !== undefined ? { name: change.name } : {}),
        ...(change.redirect_uris ? { redirect_uris: JSON.stringify(change.redirect_uris) } : {}),
        ...(scopes !== undefined ? { scopes } : {}),
        ...(change.active !== undefined ? { is_active: change.active ? 1 : 0 } : {}),
        updated_at: deps.clock.now().toISOString(),
      })
      .where('client_id', '=', clientId)
      .execute();
    const reason = change.active === false ? 'app_deactivated' : 'app_scopes_changed';
    if (endsSessions) await revokeAppSessions({ ...deps, db: trx }, clientId, reason);
  });
  // every worker forgets the app before this answers: a reactivated app's tokens work at once
  await deps.appStatus.forget(clientId);
  const changed = Object.keys(change).filter((k) => change[k as keyof SmartAppChange] !== undefined);
  await auditApp(deps, actor, ctx, 'smart_apps.update', {
    client_id: clientId,
    fields: changed.join(','),
    sessions_ended: endsSessions,
    ...(change.active !== undefined ? { active: change.active } : {}),
  });
  return toSmartAppDto(await appOrNotFound(deps, clientId));
}
