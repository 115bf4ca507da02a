import { precompiledInsert, precompiledInsertRows } from '../../db/precompiled.js';
import type { AuditOutcome, NewAuditEntry } from '../../db/schema.js';
import type { Clock } from '../clock.js';
import { enqueueFhirAuditEvent } from '../email/outbox.js';
import { ERROR_CATALOG } from '../errors.js';
import { uuidv7 } from '../ids.js';
import type { Db } from '../users/userRepository.js';
import { toFhirAuditEvent } from './auditEvent.js';

/**
 * What happened, by whom, to what — never codes, passwords, tokens or clinical values.
 * `detail` holds a small JSON object of non-secret facts (e.g. `{reason: "inactive"}`).
 */
export interface AuditEvent {
  action: string;
  outcome: AuditOutcome;
  actorUserId?: string | null;
  actorRole?: string | null;
  targetUserId?: string | null;
  targetFhirType?: string | null;
  targetFhirId?: string | null;
  /** The patient whose data the event concerns (access events: one entry per patient). */
  patientId?: string | null;
  /** Why a request was refused or failed: an AppError code, or an audit-only one such as `out_of_scope`. */
  errorCode?: string | null;
  requestId?: string | null;
  clientIp?: string | null;
  detail?: Record<string, string | number | boolean | null>;
}

// services that predate `errorCode` name the AppError code of a failure as its `reason`
function errorCodeOf(event: AuditEvent): string | null {
  if (event.errorCode !== undefined) return event.errorCode;
  const reason = event.detail?.reason;
  return event.outcome !== 'success' && typeof reason === 'string' && reason in ERROR_CATALOG ? reason : null;
}

/** The event's detail as its row stores it. */
export const detailJson = (event: AuditEvent): string | null =>
  event.detail ? JSON.stringify(event.detail) : null;

/** What a row is stamped with besides its event: the batched trail makes the time and detail once for several rows. */
export interface RowStamp {
  /** A UUIDv7 of the event's time. */
  readonly id: string;
  /** The event's time, ISO 8601. */
  readonly occurredAt: string;
  /** The event's detail as detailJson makes it. */
  readonly detail: string | null;
}

/** The audit_log row for an event. */
export function auditRow(event: AuditEvent, { id, occurredAt, detail }: RowStamp): Required<NewAuditEntry> {
  return {
    id,
    occurred_at: occurredAt,
    action: event.action,
    outcome: event.outcome,
    actor_user_id: event.actorUserId ?? null,
    actor_role: event.actorRole ?? null,
    target_user_id: event.targetUserId ?? null,
    target_fhir_type: event.targetFhirType ?? null,
    target_fhir_id: event.targetFhirId ?? null,
    patient_id: event.patientId ?? null,
    error_code: errorCodeOf(event),
    request_id: event.requestId ?? null,
    client_ip: event.clientIp ?? null,
    detail,
  };
}

const AUDIT_LOG_COLUMNS = [
  'id',
  'occurred_at',
  'action',
  'outcome',
  'actor_user_id',
  'actor_role',
  'target_user_id',
  'target_fhir_type',
  'target_fhir_id',
  'patient_id',
  'error_code',
  'request_id',
  'client_ip',
  'detail',
] as const;

const insertAuditRow = precompiledInsert('audit_log', AUDIT_LOG_COLUMNS);

/** Rows of auditRow, many per statement (the batched trail): compiled once per row count. */
export const insertAuditRows = precompiledInsertRows('audit_log', AUDIT_LOG_COLUMNS);

/**
 * Appends one entry to the audit log (append-only: the database refuses updates and deletes)
 * and queues its FHIR AuditEvent mirror in the same transaction when `db` is one. For the
 * transactional events (admin actions, logins); high-volume refusals and reads go through the
 * batched trail (auditTrail.ts).
 */
export async function writeAudit(db: Db, clock: Clock, event: AuditEvent): Promise<void> {
  const now = clock.now();
  const row = auditRow(event, {
    id: uuidv7(now.getTime()),
    occurredAt: now.toISOString(),
    detail: detailJson(event),
  });
  await insertAuditRow(db, row);
  await enqueueFhirAuditEvent(
    db,
    clock,
    toFhirAuditEvent(row, { name: 'fhir-facade', logicalReferences: true }),
  );
}
