import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema.js';
import type { Clock } from '../clock.js';
import { uuidv7 } from '../ids.js';
import { isoAfter } from '../leases.js';
import type { Logger } from '../logger.js';
import type { Db } from '../users/userRepository.js';
import { type AuditEvent, writeAudit } from './auditService.js';

/**
 * A passthrough write is recorded before it is forwarded, and the record is removed in the
 * transaction that audits its outcome. A process killed in between (SIGKILL, OOM, a power cut)
 * leaves the record behind: the write may have been applied upstream with no audit entry, so
 * reconciliation writes the entry the request could not, `failed` with `applied: unknown`.
 */

/** The write being forwarded: what its audit entry will name. */
export type OpenWrite = Pick<
  AuditEvent,
  'action' | 'targetFhirType' | 'targetFhirId' | 'actorUserId' | 'actorRole' | 'requestId' | 'clientIp'
> & { readonly method: string; readonly operation?: string | undefined };

/**
 * How long past one FHIR timeout a live request may still be working: a batch whose entries'
 * If-Match each cost a read makes several upstream calls. Generous, so a live write is never
 * audited as interrupted; the cost is only a later entry for one that was.
 */
const AUDIT_GRACE_MS = 10 * 60_000;

/** Records a write about to be forwarded; returns the id its outcome closes. */
export async function openWrite(
  db: Db,
  clock: Clock,
  write: OpenWrite,
  fhirTimeoutMs: number,
): Promise<string> {
  const now = clock.now();
  const id = uuidv7(now.getTime());
  await db
    .insertInto('open_writes')
    .values({
      id,
      action: write.action,
      method: write.method,
      target_fhir_type: write.targetFhirType ?? null,
      target_fhir_id: write.targetFhirId ?? null,
      operation: write.operation ?? null,
      actor_user_id: write.actorUserId ?? null,
      actor_role: write.actorRole ?? null,
      request_id: write.requestId ?? null,
      client_ip: write.clientIp ?? null,
      started_at: now.toISOString(),
      lease_until: isoAfter(now, fhirTimeoutMs + AUDIT_GRACE_MS),
    })
    .execute();
  return id;
}

/** Audits a write's outcome and closes its record, both or neither. */
export async function auditAndClose(
  db: Kysely<Database>,
  clock: Clock,
  openId: string,
  event: AuditEvent,
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await writeAudit(trx, clock, event);
    await trx.deleteFrom('open_writes').where('id', '=', openId).execute();
  });
}

/** Writes the audit entry of every write whose outcome was never recorded (its process died, or the database failed then); returns how many. */
export async function auditInterruptedWrites(
  db: Kysely<Database>,
  clock: Clock,
  logger: Logger,
): Promise<number> {
  const lapsed = await db
    .selectFrom('open_writes')
    .selectAll()
    .where('lease_until', '<', clock.now().toISOString())
    .orderBy('lease_until')
    .limit(100)
    .execute();
  let audited = 0;
  for (const row of lapsed) {
    const claimed = await db.transaction().execute(async (trx) => {
      // the delete claims the row: another instance reconciling at the same time finds it gone
      const { numDeletedRows } = await trx
        .deleteFrom('open_writes')
        .where('id', '=', row.id)
        .executeTakeFirst();
      if (numDeletedRows !== 1n) return false;
      await writeAudit(trx, clock, {
        action: row.action,
        outcome: 'failed',
        errorCode: 'internal_error',
        actorUserId: row.actor_user_id,
        actorRole: row.actor_role,
        targetFhirType: row.target_fhir_type,
        targetFhirId: row.target_fhir_id,
        requestId: row.request_id,
        clientIp: row.client_ip,
        detail: {
          method: row.method,
          ...(row.operation ? { operation: row.operation } : {}),
          applied: 'unknown',
          interrupted: true,
          started_at: row.started_at,
        },
      });
      return true;
    });
    if (claimed) audited += 1;
  }
  if (audited > 0)
    logger.warn(
      { count: audited },
      'audited writes whose outcome was never recorded (a stopped process, or the database failing after the FHIR server answered)',
    );
  return audited;
}
