import type { AuditOutcome, NewAuditEntry } from '../../db/schema.js';
import type { Clock } from '../clock.js';
import { enqueueFhirAuditEvent } from '../email/outbox.js';
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
  requestId?: string | null;
  clientIp?: string | null;
  detail?: Record<string, string | number | boolean | null>;
}

/**
 * Appends one entry to the audit log (append-only: the database refuses updates and deletes)
 * and queues its FHIR AuditEvent mirror in the same transaction when `db` is one.
 */
export async function writeAudit(db: Db, clock: Clock, event: AuditEvent): Promise<void> {
  const now = clock.now();
  const row: NewAuditEntry = {
    id: uuidv7(now.getTime()),
    occurred_at: now.toISOString(),
    action: event.action,
    outcome: event.outcome,
    actor_user_id: event.actorUserId ?? null,
    actor_role: event.actorRole ?? null,
    target_user_id: event.targetUserId ?? null,
    target_fhir_type: event.targetFhirType ?? null,
    target_fhir_id: event.targetFhirId ?? null,
    request_id: event.requestId ?? null,
    client_ip: event.clientIp ?? null,
    detail: event.detail ? JSON.stringify(event.detail) : null,
  };
  await db.insertInto('audit_log').values(row).execute();
  await enqueueFhirAuditEvent(db, clock, toFhirAuditEvent(row, 'fhir-facade'));
}
