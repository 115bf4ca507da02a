import type { Kysely } from 'kysely';
import type { Database, OutboxRow } from '../../db/schema.js';
import type { Clock } from '../clock.js';
import {
  markOutboxFailed,
  markOutboxRetry,
  markOutboxSent,
  type OutboxClaim,
  type OutboxDb,
  renewOutboxClaim,
} from '../email/outbox.js';
import { backoffMs, errorLabel, PermanentFailure, parsePayload } from '../email/outboxFailures.js';
import { AppError } from '../errors.js';
import type { FhirService } from '../fhir/fhirService.js';
import { isStored } from '../fhir/upstreamStatus.js';
import { heartbeat } from '../leases.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics/metrics.js';

/**
 * The AuditEvent mirror's lane of the outbox (src/email/outboxWorker.ts polls it): what it claimed
 * goes to the FHIR server as one `batch` Bundle, settled entry by entry.
 */

/** What a lane remembers between ticks: shared with the outbox worker that polls it. */
export interface LaneState {
  /** After a delivery failed, the lane rests until the failed row's retry time (its server is probably down). */
  restingUntil: number;
  /** The server refused a batch: every later event goes alone. */
  batchesRefused: boolean;
}

export interface AuditEventLane {
  readonly deps: {
    readonly db: Kysely<Database>;
    readonly clock: Clock;
    readonly logger: Logger;
    readonly fhir: FhirService;
    readonly metrics?: Pick<Metrics, 'outboxFailure'> | undefined;
  };
  readonly leaseMs: number;
  readonly maxAttempts: number;
  readonly state: LaneState;
}

/** A FHIR `batch` Bundle creating each AuditEvent (R4 http.html#transaction). */
export function auditEventBatch(events: readonly unknown[]) {
  return {
    resourceType: 'Bundle',
    type: 'batch',
    entry: events.map((resource) => ({ resource, request: { method: 'POST', url: 'AuditEvent' } })),
  };
}

/**
 * What a batch-response says of each of `sent` entries, in order: undefined for a success (a
 * 2xx status), else a label (`http_400`); undefined in place of the list when the answer is not a
 * batch-response of as many entries (the events are then sent one at a time).
 */
export function batchEntryFailures(answer: unknown, sent: number): (string | undefined)[] | undefined {
  const bundle = answer as { resourceType?: unknown; entry?: unknown } | undefined;
  if (bundle?.resourceType !== 'Bundle' || !Array.isArray(bundle.entry) || bundle.entry.length !== sent)
    return undefined;
  return bundle.entry.map((entry: { response?: { status?: unknown } } | null) => {
    const status = typeof entry?.response?.status === 'string' ? entry.response.status : '';
    return /^2\d\d/.test(status) ? undefined : `http_${status.slice(0, 3) || 'none'}`;
  });
}

/**
 * The AuditEvent lane posts what it claimed as one FHIR `batch` Bundle: one request and two
 * commits per batch instead of per event (every login and admin action mirrors one). Entries
 * are settled one by one from the batch-response. A server that refuses batches gets the
 * events one at a time from then on. Returns undefined when the batch was not sent that way.
 */
export async function deliverAuditBatch(
  lane: AuditEventLane,
  rows: readonly OutboxRow[],
): Promise<boolean | undefined> {
  const { db, clock, logger, fhir } = lane.deps;
  const claims = rows.map((row) => ({ id: row.id, attempts: row.attempts }));
  const beat = heartbeat(
    async () => {
      const until = new Date(clock.now().getTime() + lane.leaseMs).toISOString();
      const renewed = await Promise.all(claims.map((claim) => renewOutboxClaim(db, claim, until)));
      return renewed.every(Boolean);
    },
    logger,
    Math.max(50, Math.floor(lane.leaseMs / 3)),
  );
  try {
    const payloads = rows.map((row) => {
      try {
        return row.attempts > lane.maxAttempts
          ? new PermanentFailure('too_many_attempts')
          : parsePayload(row);
      } catch (error) {
        return error as PermanentFailure;
      }
    });
    const sendable = rows.flatMap((_row, i) => (payloads[i] instanceof PermanentFailure ? [] : [i]));
    let outcome: (string | undefined)[] = [];
    if (sendable.length > 0) {
      const bundle = auditEventBatch(sendable.map((i) => payloads[i]));
      try {
        const result = await fhir.forward({ method: 'POST', path: '', body: bundle });
        // a 304 is no 2xx: nothing was stored (a cache in front of the server), each event is retried
        if (!isStored(result.status))
          throw new AppError('upstream_error', { cause: new Error(`batch answered ${result.status}`) });
        const failures = batchEntryFailures(result.body, sendable.length);
        // a success whose answer cannot be read entry by entry (an OperationOutcome, fewer
        // entries): the server took the batch, and sending each event again stored them twice
        // (review: on every tick). Taken as delivered; later events go alone, their answers readable
        if (!failures) lane.state.batchesRefused = true;
        outcome = failures ?? sendable.map(() => undefined);
      } catch (error) {
        // a 4xx to the batch itself (400, 405, 413, ...) is a server that takes no batches of these:
        // every later event goes alone; a 5xx, a timeout or a refused connection is a retry of this one
        if (error instanceof AppError && error.status < 500) {
          lane.state.batchesRefused = true;
          return undefined;
        }
        outcome = sendable.map(() => errorLabel(error));
      }
    }
    await db.transaction().execute(async (trx) => {
      for (const [i, row] of rows.entries()) {
        const claim = claims[i] as OutboxClaim;
        const payload = payloads[i];
        if (payload instanceof PermanentFailure)
          await markFailure(lane, trx, row, claim, payload.label, true);
        else {
          const label = outcome[sendable.indexOf(i)];
          if (label) await markFailure(lane, trx, row, claim, label, false);
          else await markOutboxSent(trx, claim, clock.now().toISOString());
        }
      }
    });
    return outcome.every((label) => label === undefined);
  } finally {
    await beat.stop();
  }
}

/** Marks a claimed row after a failed attempt: given up when permanent or out of attempts, else retried later. */
async function markFailure(
  lane: AuditEventLane,
  trx: OutboxDb,
  row: OutboxRow,
  claim: OutboxClaim,
  label: string,
  permanent: boolean,
): Promise<void> {
  const { clock, logger, metrics } = lane.deps;
  const log = { outbox_id: row.id, kind: row.kind, attempts: row.attempts, error: label };
  if (permanent || row.attempts >= lane.maxAttempts) {
    if (await markOutboxFailed(trx, claim, label)) {
      logger.warn(log, 'outbox row failed for good');
      metrics?.outboxFailure(row.kind, 'failed');
    }
    return;
  }
  const delay = backoffMs(row.attempts);
  const next = new Date(clock.now().getTime() + delay).toISOString();
  if (await markOutboxRetry(trx, claim, next, label)) {
    logger.warn({ ...log, next_attempt_at: next }, 'outbox delivery failed, will retry');
    metrics?.outboxFailure(row.kind, 'retry');
  }
  lane.state.restingUntil = Math.max(lane.state.restingUntil, clock.now().getTime() + delay);
}
