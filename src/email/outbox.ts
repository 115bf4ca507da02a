import type { Kysely, Transaction } from 'kysely';
import { deleteInChunks } from '../../db/chunkedDeletes.js';
import { precompiledInsert } from '../../db/precompiled.js';
import { type Database, OUTBOX_KINDS, type OutboxKind, type OutboxRow, type Role } from '../../db/schema.js';
import type { Clock } from '../clock.js';
import { uuidv7 } from '../ids.js';
import { type SecretKey, seal } from '../secrets.js';
import { assertPlainAddress } from './mailer.js';

/**
 * The transactional outbox: work that must happen after a commit and must not be lost (mail,
 * FHIR AuditEvent mirroring). Enqueue inside the same transaction as the change it reports;
 * the outbox worker delivers it afterwards, at least once.
 * https://microservices.io/patterns/data/transactional-outbox.html
 */

/** A connection or an open transaction: enqueueing inside the caller's transaction is the point. */
export type OutboxDb = Kysely<Database> | Transaction<Database>;

export interface AccessCodeMailJob {
  template: 'access_code';
  to: string;
  name: string;
  role: Role;
  purpose: 'signup' | 'password_reset';
  /** Plain code; stored only sealed. */
  code: string;
  /** ISO-8601 */
  expiresAt: string;
}

/** What the outbox row holds for an access-code mail before it is sent. */
export interface SealedAccessCodePayload {
  template: 'access_code';
  to: string;
  name: string;
  role: Role;
  purpose: 'signup' | 'password_reset';
  /** AES-256-GCM under Secrets.sealingKey, a key that never enters the database. */
  code_sealed: string;
  expiresAt: string;
}

/** What is left once a mail is sent or given up: enough to audit, no code sealed or not. */
export interface PurgedMailPayload {
  template: string;
  to: string;
  purpose: string;
  purged: true;
}

/**
 * Queues an access-code mail. The database never holds the code in plaintext: it is sealed
 * here, unsealed only in the worker's memory, and the sealed copy is purged once sent.
 */
export async function enqueueAccessCodeMail(
  db: OutboxDb,
  clock: Clock,
  sealingKey: SecretKey,
  job: AccessCodeMailJob,
): Promise<string> {
  assertPlainAddress(job.to);
  if (Number.isNaN(Date.parse(job.expiresAt))) throw new Error('expiresAt must be an ISO-8601 time');
  const payload: SealedAccessCodePayload = {
    template: 'access_code',
    to: job.to,
    name: job.name,
    role: job.role,
    purpose: job.purpose,
    code_sealed: seal(sealingKey, job.code),
    expiresAt: new Date(job.expiresAt).toISOString(),
  };
  return insertOutboxRow(db, clock, 'email', JSON.stringify(payload));
}

/**
 * Queues a FHIR AuditEvent (https://hl7.org/fhir/R4/auditevent.html) to be POSTed to the FHIR
 * server, so an audit record survives a FHIR outage.
 */
export async function enqueueFhirAuditEvent(
  db: OutboxDb,
  clock: Clock,
  auditEvent: Record<string, unknown>,
): Promise<string> {
  if (auditEvent.resourceType !== 'AuditEvent') throw new Error('resourceType must be AuditEvent');
  return insertOutboxRow(db, clock, 'fhir_audit_event', JSON.stringify(auditEvent));
}

const insertRow = precompiledInsert('outbox', [
  'id',
  'kind',
  'payload',
  'status',
  'attempts',
  'next_attempt_at',
  'locked_until',
  'last_error',
  'created_at',
  'sent_at',
]);

async function insertOutboxRow(
  db: OutboxDb,
  clock: Clock,
  kind: OutboxKind,
  payload: string,
): Promise<string> {
  const now = clock.now();
  const id = uuidv7(now.getTime());
  await insertRow(db, {
    id,
    kind,
    payload,
    status: 'pending',
    attempts: 0,
    next_attempt_at: now.toISOString(),
    locked_until: null,
    last_error: null,
    created_at: now.toISOString(),
    sent_at: null,
  });
  return id;
}

/**
 * Ids of rows due now, of one lane (`kind`) or all: pending and past their backoff, or `sending`
 * under an expired lease (a crashed worker).
 */
export async function findDueOutboxIds(
  db: OutboxDb,
  nowIso: string,
  limit: number,
  kind?: OutboxKind,
): Promise<string[]> {
  const rows = await db
    .selectFrom('outbox')
    .select('id')
    // every lane named when none is: the poll seeks in outbox_lane_due (kind, status, ...)
    .where('kind', 'in', kind ? [kind] : OUTBOX_KINDS)
    // implied by the condition below, but it lets SQLite seek to the undelivered rows in
    // outbox_lane_due (kind, status, ...): without it every poll read each row the lane had ever
    // delivered, 50–70 ms on the event loop with 500,000 (docs/performance.md)
    .where('status', 'in', ['pending', 'sending'])
    .where((eb) =>
      eb.or([
        eb.and([eb('status', '=', 'pending'), eb('next_attempt_at', '<=', nowIso)]),
        eb.and([eb('status', '=', 'sending'), eb('locked_until', '<', nowIso)]),
      ]),
    )
    .orderBy('next_attempt_at')
    .orderBy('id')
    .limit(limit)
    .execute();
  return rows.map((r) => r.id);
}

/**
 * Claims one row with a single conditional UPDATE: only one of any number of racing workers
 * (in this process or another instance) gets it back. The claim counts as an attempt, so the
 * new `attempts` value is the claim's fencing token for the updates that follow.
 */
export async function claimOutboxRow(
  db: OutboxDb,
  id: string,
  nowIso: string,
  leaseUntilIso: string,
): Promise<OutboxRow | undefined> {
  return db
    .updateTable('outbox')
    .set((eb) => ({ status: 'sending', locked_until: leaseUntilIso, attempts: eb('attempts', '+', 1) }))
    .where('id', '=', id)
    .where((eb) =>
      eb.or([
        eb.and([eb('status', '=', 'pending'), eb('next_attempt_at', '<=', nowIso)]),
        eb.and([eb('status', '=', 'sending'), eb('locked_until', '<', nowIso)]),
      ]),
    )
    .returningAll()
    .executeTakeFirst();
}

/** The claim a worker holds: the row id and the attempts value its claim set. */
export interface OutboxClaim {
  readonly id: string;
  readonly attempts: number;
}

/** Updates a claimed row only while the claim is still ours; false means another worker took it over. */
async function updateClaimed(
  db: OutboxDb,
  claim: OutboxClaim,
  values: {
    status: 'pending' | 'sent' | 'failed';
    payload?: string;
    next_attempt_at?: string;
    sent_at?: string;
    last_error?: string | null;
  },
): Promise<boolean> {
  const result = await db
    .updateTable('outbox')
    .set({ ...values, locked_until: null })
    .where('id', '=', claim.id)
    .where('status', '=', 'sending')
    .where('attempts', '=', claim.attempts)
    .executeTakeFirst();
  return result.numUpdatedRows === 1n;
}

/** Extends a claim's lease while its delivery runs (the heartbeat of leases.ts); false once taken over. */
export async function renewOutboxClaim(
  db: OutboxDb,
  claim: OutboxClaim,
  leaseUntilIso: string,
): Promise<boolean> {
  const result = await db
    .updateTable('outbox')
    .set({ locked_until: leaseUntilIso })
    .where('id', '=', claim.id)
    .where('status', '=', 'sending')
    .where('attempts', '=', claim.attempts)
    .executeTakeFirst();
  return result.numUpdatedRows === 1n;
}

export function markOutboxSent(
  db: OutboxDb,
  claim: OutboxClaim,
  sentAtIso: string,
  payload?: string,
): Promise<boolean> {
  return updateClaimed(db, claim, {
    status: 'sent',
    sent_at: sentAtIso,
    last_error: null,
    ...(payload === undefined ? {} : { payload }),
  });
}

export function markOutboxRetry(
  db: OutboxDb,
  claim: OutboxClaim,
  nextAttemptIso: string,
  lastError: string,
): Promise<boolean> {
  return updateClaimed(db, claim, {
    status: 'pending',
    next_attempt_at: nextAttemptIso,
    last_error: lastError,
  });
}

export function markOutboxFailed(
  db: OutboxDb,
  claim: OutboxClaim,
  lastError: string,
  payload?: string,
): Promise<boolean> {
  return updateClaimed(db, claim, {
    status: 'failed',
    last_error: lastError,
    ...(payload === undefined ? {} : { payload }),
  });
}

/** How long a delivered row is kept (its AuditEvent is on the FHIR server, its mail purged of the code). */
export const DELIVERED_RETENTION_MS = 7 * 86_400_000;

/**
 * Deletes rows delivered before `beforeIso` (status `sent`), in chunks (db/chunkedDeletes.ts);
 * returns how many. Undelivered and failed rows stay. Without it the AuditEvent mirror kept a
 * copy of every audited event (~1 KB each) for good, next to the audit trail that holds the event.
 */
export function purgeDeliveredOutboxRows(
  db: Kysely<Database>,
  beforeIso: string,
  stopped?: () => boolean,
): Promise<number> {
  return deleteInChunks(
    db,
    'outbox',
    (ids) =>
      ids
        .where('kind', 'in', OUTBOX_KINDS)
        .where('status', '=', 'sent')
        // a row is sent after it was due, so this holds for every row the next line keeps:
        // with the two above it lets the statement seek in outbox_lane_due (kind, status, next_attempt_at)
        .where('next_attempt_at', '<', beforeIso)
        .where('sent_at', '<', beforeIso),
    stopped,
  );
}

export function findOutboxRow(db: OutboxDb, id: string): Promise<OutboxRow | undefined> {
  return db.selectFrom('outbox').selectAll().where('id', '=', id).executeTakeFirst();
}
