import type { Patient, Practitioner } from '@medplum/fhirtypes';
import type { AuditOutcome } from '../../db/schema.js';
import { writeAudit } from '../audit/auditService.js';
import { generateAccessCode, hashAccessCode } from '../auth/accessCodes.js';
import { enqueueAccessCodeMail } from '../email/outbox.js';
import { AppError } from '../errors.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import { displayName } from '../provisioning/fhirMappers.js';
import { findUserById } from '../users/userRepository.js';

/** Admin operations on accounts and the audit trail. */

const FHIR_TYPE_BY_ROLE = { patient: 'Patient', practitioner: 'Practitioner' } as const;

export interface ReissueResult {
  message: string;
  expires_at: string;
  /** Only with ADMIN_CODE_IN_RESPONSE=true, for deployments without mail. */
  access_code?: string;
}

/** The person's name from their FHIR record, for the mail greeting; the mail still goes out without it. */
async function nameFromFhir(deps: AppDeps, type: string, id: string): Promise<string> {
  try {
    const response = await deps.fhir.request<Patient | Practitioner>({
      method: 'GET',
      path: `${type}/${id}`,
    });
    return response.status === 200 && response.body ? displayName(response.body) : '';
  } catch {
    return '';
  }
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
  if (user.role === 'admin' || user.is_registered === 1 || user.is_active !== 1 || !user.fhir_resource_id) {
    throw new AppError('conflict', {
      detail: 'Only a pending, active patient or practitioner account has an access code.',
    });
  }
  const fhirType = FHIR_TYPE_BY_ROLE[user.role];
  const name = await nameFromFhir(deps, fhirType, user.fhir_resource_id);
  const now = deps.clock.now();
  const code = generateAccessCode();
  const expiresAt = new Date(now.getTime() + deps.config.accessCodeTtlSeconds * 1000).toISOString();
  const disclose = deps.config.adminCodeInResponse;
  await deps.db.transaction().execute(async (trx) => {
    const updated = await trx
      .updateTable('users')
      .set({
        access_code_hash: hashAccessCode(deps.secrets.codeHmacKey, 'signup', user.email, code),
        access_code_expires_at: expiresAt,
        access_code_attempts: 0,
        updated_at: now.toISOString(),
      })
      .where('id', '=', user.id)
      .where('is_registered', '=', 0)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1)
      throw new AppError('conflict', { detail: 'The account was registered meanwhile.' });
    await enqueueAccessCodeMail(trx, deps.clock, deps.secrets.sealingKey, {
      template: 'access_code',
      to: user.email,
      name,
      role: user.role,
      purpose: 'signup',
      code,
      expiresAt,
    });
    await writeAudit(trx, deps.clock, {
      action: 'users.reissue_access_code',
      outcome: 'success',
      actorUserId: actor.userId,
      actorRole: actor.role,
      targetUserId: user.id,
      targetFhirType: fhirType,
      targetFhirId: user.fhir_resource_id,
      requestId: ctx.requestId,
      clientIp: ctx.clientIp,
      detail: { code_disclosed_to_admin: disclose },
    });
  });
  deps.outbox.wake();
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
  from?: string;
  to?: string;
  limit: number;
  cursor?: string;
}

function decodeCursor(cursor: string): string {
  try {
    const id = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { before?: unknown };
    if (typeof id.before === 'string') return id.before;
  } catch {
    // fall through
  }
  throw new AppError('validation_failed', {
    errors: [{ path: 'cursor', message: 'is not a cursor from this API' }],
  });
}

const encodeCursor = (id: string) => Buffer.from(JSON.stringify({ before: id })).toString('base64url');

/** The audit trail, newest first, filtered, paged by an opaque cursor (ids are time-ordered UUIDv7). */
export async function listAudit(deps: AppDeps, query: AuditQuery) {
  let q = deps.db
    .selectFrom('audit_log')
    .selectAll()
    .orderBy('id', 'desc')
    .limit(query.limit + 1);
  if (query.action) q = q.where('action', '=', query.action);
  if (query.outcome) q = q.where('outcome', '=', query.outcome);
  if (query.actor_user_id) q = q.where('actor_user_id', '=', query.actor_user_id);
  if (query.target_user_id) q = q.where('target_user_id', '=', query.target_user_id);
  if (query.from) q = q.where('occurred_at', '>=', new Date(query.from).toISOString());
  if (query.to) q = q.where('occurred_at', '<', new Date(query.to).toISOString());
  if (query.cursor) q = q.where('id', '<', decodeCursor(query.cursor));
  const rows = await q.execute();
  const page = rows.slice(0, query.limit);
  return {
    entries: page.map((r) => ({
      id: r.id,
      occurred_at: r.occurred_at,
      action: r.action,
      outcome: r.outcome,
      actor: { user_id: r.actor_user_id, role: r.actor_role },
      target: { user_id: r.target_user_id, fhir_type: r.target_fhir_type, fhir_id: r.target_fhir_id },
      request_id: r.request_id,
      client_ip: r.client_ip,
      detail: r.detail ? (JSON.parse(r.detail) as Record<string, unknown>) : null,
    })),
    next_cursor: rows.length > query.limit && page.length ? encodeCursor(page.at(-1)!.id) : null,
  };
}

/** FHIR resources a failed provisioning could not remove, for an admin to reconcile. */
export async function listOrphans(deps: AppDeps) {
  const rows = await deps.db
    .selectFrom('fhir_orphans')
    .selectAll()
    .where('resolved_at', 'is', null)
    .orderBy('id', 'desc')
    .execute();
  return {
    orphans: rows.map((r) => ({
      id: r.id,
      fhir_type: r.fhir_type,
      fhir_id: r.fhir_id,
      reason: r.reason,
      request_id: r.request_id,
      created_at: r.created_at,
    })),
  };
}
