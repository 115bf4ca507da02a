import { sql } from 'kysely';
import type { AuditOutcome, UserRow } from '../../db/schema.js';
import { toFhirAuditEvent } from '../audit/auditEvent.js';
import { writeAudit } from '../audit/auditService.js';
import { MAX_CODE_ATTEMPTS } from '../auth/accessCodes.js';
import { CODE_ELIGIBLE, issueCode } from '../auth/accountCodes.js';
import { revokeAllSessions } from '../auth/sessions.js';
import { AppError } from '../errors.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import { isUuidV7 } from '../ids.js';
import { LEASE_MS } from '../leases.js';
import { pendingIntents } from '../provisioning/intents.js';
import { unresolvedOrphans } from '../provisioning/orphans.js';
import { FHIR_TYPE_BY_ROLE } from '../users/fhirIdentity.js';
import { toUserDto } from '../users/userDto.js';
import { findUserById, setAccountActive } from '../users/userRepository.js';

/** Admin operations on accounts and the audit trail. */

export interface ReissueResult {
  message: string;
  expires_at: string;
  /** Only with ADMIN_CODE_IN_RESPONSE=true, for deployments without mail. */
  access_code?: string;
}

/**
 * Voids a pending account's access code and mails a new one (the old one stops working at
 * once: only the new hash is stored). Registered, deactivated and admin accounts have no code.
 */
export async function reissueAccessCode(
  deps: AppDeps,
  actor: Caller,
  ctx: RequestContext,
  userId: string,
): Promise<ReissueResult> {
  const user = await findUserById(deps.db, userId);
  if (!user) throw new AppError('not_found', { detail: 'No such user.' });
  if (!CODE_ELIGIBLE.signup(user) || !user.fhir_resource_id) {
    throw new AppError('conflict', {
      detail: 'Only a pending, active patient or practitioner account has an access code.',
    });
  }
  const disclose = deps.config.adminCodeInResponse;
  const { code, expiresAt } = await issueCode(deps, user, 'signup', {
    action: 'users.reissue_access_code',
    actorUserId: actor.userId,
    actorRole: actor.role,
    targetUserId: user.id,
    targetFhirType: FHIR_TYPE_BY_ROLE[user.role],
    targetFhirId: user.fhir_resource_id,
    requestId: ctx.requestId,
    clientIp: ctx.clientIp,
    detail: { code_disclosed_to_admin: disclose },
  });
  return {
    message: `A new access code was emailed to ${user.email}; the previous one no longer works.`,
    expires_at: expiresAt,
    ...(disclose ? { access_code: code } : {}),
  };
}

export interface AuditQuery {
  action?: string;
  outcome?: AuditOutcome;
  actor_user_id?: string;
  target_user_id?: string;
  /** A FHIR Patient id: who read (or tried to read) this patient's data. */
  patient?: string;
  error_code?: string;
  from?: string;
  to?: string;
  limit: number;
  cursor?: string;
}

function decodeCursor(cursor: string): string {
  try {
    const id = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { before?: unknown };
    // a row id (users and audit entries have UUIDv7 ids): anything else is no position of ours,
    // and a NUL would be a 500 on PostgreSQL, which cannot compare text holding one
    if (typeof id.before === 'string' && isUuidV7(id.before)) return id.before;
  } catch {
    // fall through
  }
  throw new AppError('validation_failed', {
    errors: [{ path: 'cursor', message: 'is not a cursor from this API' }],
  });
}

const encodeCursor = (id: string) => Buffer.from(JSON.stringify({ before: id })).toString('base64url');

/** Rows were fetched newest first with one extra: that extra row says whether a next page exists. */
function pageOf<R extends { id: string }>(
  rows: R[],
  limit: number,
): { items: R[]; next_cursor: string | null } {
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return { items, next_cursor: rows.length > limit && last ? encodeCursor(last.id) : null };
}

/** One page of audit rows, newest first, filtered, paged by an opaque cursor (ids are time-ordered UUIDv7). */
async function auditRows(deps: AppDeps, query: AuditQuery) {
  // what the batched trail still holds is part of the answer: an admin sees everything up to now
  await deps.auditTrail.flush();
  let q = deps.db
    .selectFrom('audit_log')
    .selectAll()
    .limit(query.limit + 1);
  // a patient's rows come from index audit_log_by_patient (patient_id, occurred_at) in order; an id
  // starts with its occurred_at millisecond, so both orders agree and the id cursor still holds
  q = query.patient
    ? q.where('patient_id', '=', query.patient).orderBy('occurred_at', 'desc').orderBy('id', 'desc')
    : q.orderBy('id', 'desc');
  if (query.action) q = q.where('action', '=', query.action);
  if (query.outcome) q = q.where('outcome', '=', query.outcome);
  if (query.error_code) q = q.where('error_code', '=', query.error_code);
  if (query.actor_user_id) q = q.where('actor_user_id', '=', query.actor_user_id);
  if (query.target_user_id) q = q.where('target_user_id', '=', query.target_user_id);
  if (query.from) q = q.where('occurred_at', '>=', new Date(query.from).toISOString());
  if (query.to) q = q.where('occurred_at', '<', new Date(query.to).toISOString());
  if (query.cursor) q = q.where('id', '<', decodeCursor(query.cursor));
  return pageOf(await q.execute(), query.limit);
}

/** The audit trail as JSON entries. */
export async function listAudit(deps: AppDeps, query: AuditQuery) {
  const { items, next_cursor } = await auditRows(deps, query);
  return {
    entries: items.map((r) => ({
      id: r.id,
      occurred_at: r.occurred_at,
      action: r.action,
      outcome: r.outcome,
      error_code: r.error_code,
      actor: { user_id: r.actor_user_id, role: r.actor_role },
      target: { user_id: r.target_user_id, fhir_type: r.target_fhir_type, fhir_id: r.target_fhir_id },
      patient_id: r.patient_id,
      request_id: r.request_id,
      client_ip: r.client_ip,
      detail: r.detail ? (JSON.parse(r.detail) as Record<string, unknown>) : null,
    })),
    next_cursor,
  };
}

/**
 * The same page as a FHIR searchset Bundle of AuditEvents (IHE BALP shape for reads and
 * searches), for FHIR-native audit tools; `next` links to the following page.
 */
export async function auditEventBundle(
  deps: AppDeps,
  query: AuditQuery,
  pageUrl: (cursor: string) => string,
) {
  const { items, next_cursor } = await auditRows(deps, query);
  const source = { name: 'fhir-facade', baseUrl: deps.config.publicBaseUrl };
  return {
    resourceType: 'Bundle' as const,
    type: 'searchset' as const,
    ...(next_cursor ? { link: [{ relation: 'next', url: pageUrl(next_cursor) }] } : {}),
    entry: items.map((row) => ({
      fullUrl: `urn:uuid:${row.id}`,
      resource: { ...toFhirAuditEvent(row, source), id: row.id },
    })),
  };
}

/** FHIR resources a failed provisioning could not remove, for an admin to reconcile. */
export async function listOrphans(deps: AppDeps) {
  const rows = await unresolvedOrphans(deps.db);
  // creates still open a lease after they began: a crashed request reconciliation has not settled yet
  // (e.g. the FHIR server is down); a live request settles its own within the lease
  const settledBy = new Date(deps.clock.now().getTime() - LEASE_MS).toISOString();
  const pending = (await pendingIntents(deps.db)).filter((i) => i.created_at < settledBy);
  return {
    orphans: rows.map((r) => ({
      id: r.id,
      fhir_type: r.fhir_type,
      fhir_id: r.fhir_id,
      reason: r.reason,
      request_id: r.request_id,
      created_at: r.created_at,
    })),
    unfinished_creates: pending.map((i) => ({
      intent_id: i.id,
      fhir_type: i.fhir_type,
      created_at: i.created_at,
      attempts: i.attempts,
      last_error: i.last_error,
      request_id: i.request_id,
      next_attempt_at: i.lease_until,
    })),
  };
}

export type UserStatus = 'pending' | 'expired' | 'active' | 'deactivated';

/** What an admin sees of an account: never a hash or code. */
function toAdminUserDto(user: UserRow, now: Date) {
  return {
    id: user.id,
    email: user.email,
    role: user.role,
    fhir_id: user.fhir_resource_id,
    status: statusOf(user, now),
    is_registered: user.is_registered === 1,
    is_active: user.is_active === 1,
    created_by_admin: user.created_by_admin === 1,
    created_at: user.created_at,
    registered_at: user.registered_at,
    last_login_at: user.last_login_at,
    // a spent or voided code has no expiry to show: "expires tomorrow" on an expired row would mislead
    access_code_expires_at: codeVoided(user) ? null : user.access_code_expires_at,
    profile: toUserDto(user).profile,
  };
}

/** No code that could still work: registered, re-issued away, or voided by too many wrong tries. */
function codeVoided(user: UserRow): boolean {
  return (
    user.is_registered === 1 ||
    user.access_code_hash === null ||
    user.access_code_attempts >= MAX_CODE_ATTEMPTS
  );
}

function statusOf(user: UserRow, now: Date): UserStatus {
  if (user.is_active !== 1) return 'deactivated';
  if (user.is_registered === 1) return 'active';
  const usable = !codeVoided(user) && (user.access_code_expires_at ?? '') > now.toISOString();
  return usable ? 'pending' : 'expired';
}

export interface UserQuery {
  role?: 'admin' | 'patient' | 'practitioner';
  status?: UserStatus;
  email?: string;
  limit: number;
  cursor?: string;
}

/** Accounts, newest first, filtered by role, status and an email fragment; cursor-paged. */
export async function listUsers(deps: AppDeps, query: UserQuery) {
  const now = deps.clock.now().toISOString();
  let q = deps.db
    .selectFrom('users')
    .selectAll()
    .orderBy('id', 'desc')
    .limit(query.limit + 1);
  if (query.role) q = q.where('role', '=', query.role);
  if (query.email) {
    // emails are stored lower-cased; escape LIKE wildcards so the search is literal
    const fragment = query.email.toLowerCase().replace(/[\\%_]/g, (ch) => `\\${ch}`);
    q = q.where(sql<boolean>`email like ${`%${fragment}%`} escape '\\'`);
  }
  switch (query.status) {
    case 'deactivated':
      q = q.where('is_active', '=', 0);
      break;
    case 'active':
      q = q.where('is_active', '=', 1).where('is_registered', '=', 1);
      break;
    case 'pending':
      q = q
        .where('is_active', '=', 1)
        .where('is_registered', '=', 0)
        .where('access_code_hash', 'is not', null)
        .where('access_code_attempts', '<', MAX_CODE_ATTEMPTS)
        .where('access_code_expires_at', '>', now);
      break;
    case 'expired':
      q = q
        .where('is_active', '=', 1)
        .where('is_registered', '=', 0)
        .where((eb) =>
          eb.or([
            eb('access_code_hash', 'is', null),
            eb('access_code_attempts', '>=', MAX_CODE_ATTEMPTS),
            eb('access_code_expires_at', '<=', now),
          ]),
        );
      break;
  }
  if (query.cursor) q = q.where('id', '<', decodeCursor(query.cursor));
  const { items, next_cursor } = pageOf(await q.execute(), query.limit);
  return { users: items.map((u) => toAdminUserDto(u, deps.clock.now())), next_cursor };
}

export async function getUser(deps: AppDeps, id: string) {
  const user = await findUserById(deps.db, id);
  if (!user) throw new AppError('not_found', { detail: 'No such user.' });
  return toAdminUserDto(user, deps.clock.now());
}

/**
 * Deactivates or reactivates an account. Deactivation bumps token_version and revokes every
 * session, so the user's very next request with any earlier token is refused.
 */
export async function setUserActive(
  deps: AppDeps,
  actor: Caller,
  ctx: RequestContext,
  id: string,
  active: boolean,
) {
  const user = await findUserById(deps.db, id);
  if (!user) throw new AppError('not_found', { detail: 'No such user.' });
  // an admin who deactivates themselves could leave nobody able to undo it
  if (!active && user.id === actor.userId)
    throw new AppError('conflict', { detail: 'You cannot deactivate your own account.' });
  const now = deps.clock.now();
  await deps.db.transaction().execute(async (trx) => {
    await setAccountActive(trx, id, active, now.toISOString());
    if (!active) await revokeAllSessions(trx, id, 'deactivated', now);
    await writeAudit(trx, deps.clock, {
      action: active ? 'users.activate' : 'users.deactivate',
      outcome: 'success',
      actorUserId: actor.userId,
      actorRole: actor.role,
      targetUserId: id,
      requestId: ctx.requestId,
      clientIp: ctx.clientIp,
      // an admin action is recorded even when it changed nothing; the trail says which it was
      detail: { changed: (user.is_active === 1) !== active },
    });
  });
  return getUser(deps, id);
}
