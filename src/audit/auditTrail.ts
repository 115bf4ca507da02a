import type { Kysely } from 'kysely';
import type { Database, NewAuditEntry } from '../../db/schema.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import { type AuditEvent, auditRow } from './auditService.js';

/**
 * The batched audit trail, for high-volume events that need no transaction: refusals, token
 * failures and access events (who read which patient's data). `record` only appends to a
 * buffer, so the request path never waits for a database write; the buffer is written in
 * multi-row inserts about once a second, or sooner when MAX_WAITING rows wait. A crash loses
 * at most the rows still buffered (about one second). Unlike writeAudit, these rows are not
 * mirrored to the FHIR server as AuditEvents: `GET /admin/audit?format=fhir` exports them.
 */
export interface AuditTrail {
  /** Buffers one entry, stamped now; never throws, never waits. */
  record(event: AuditEvent): void;
  /** Writes everything buffered so far (a failed write is retried once, at the next flush). */
  flush(): Promise<void>;
  /** Stops the timer and writes what is left; call before the database closes. */
  close(): Promise<void>;
}

export interface AuditTrailOptions {
  readonly db: Kysely<Database>;
  readonly clock: Clock;
  readonly logger: Logger;
  /** How long a row may wait in the buffer (default 1 s). */
  readonly intervalMs?: number;
}

/** A flush starts as soon as this many rows wait. */
export const MAX_WAITING = 200;

/** audit_log has 14 columns: 64 rows stay under SQLite's oldest variable limit (999 per statement). */
const ROWS_PER_INSERT = 64;

interface Pending {
  readonly row: NewAuditEntry;
  /** Already failed to be written once. */
  readonly retried: boolean;
}

/** The trail of one gateway (one database). */
export function createAuditTrail(options: AuditTrailOptions): AuditTrail {
  const { db, clock, logger } = options;
  const intervalMs = options.intervalMs ?? 1_000;
  let buffer: Pending[] = [];
  let timer: NodeJS.Timeout | undefined;
  // flushes run one after another, so rows are written in the order they were recorded
  let writing: Promise<void> = Promise.resolve();
  // a flush waiting for the one before it: later records join it instead of queueing another
  let queued: Promise<void> | undefined;
  let closed = false;

  const insert = async (batch: readonly Pending[]): Promise<Pending[]> => {
    const failed: Pending[] = [];
    for (let i = 0; i < batch.length; i += ROWS_PER_INSERT) {
      const chunk = batch.slice(i, i + ROWS_PER_INSERT);
      try {
        await db
          .insertInto('audit_log')
          .values(chunk.map((p) => p.row))
          .execute();
      } catch (error) {
        // the count only: a row's facts stay out of the log
        logger.error({ err: error, rows: chunk.length }, 'audit trail write failed');
        failed.push(...chunk);
      }
    }
    return failed;
  };

  const writeBuffered = async () => {
    const batch = buffer;
    buffer = [];
    if (batch.length === 0) return;
    const failed = await insert(batch);
    const dropped = failed.filter((p) => p.retried).length;
    if (dropped > 0) logger.error({ rows: dropped }, 'audit trail rows dropped after a retry');
    const again = failed.filter((p) => !p.retried).map((p) => ({ row: p.row, retried: true }));
    if (again.length > 0) {
      buffer = [...again, ...buffer];
      schedule();
    }
  };

  const flush = (): Promise<void> => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (queued) return queued;
    queued = writing
      .then(() => {
        queued = undefined;
        return writeBuffered();
      })
      .catch((error: unknown) => logger.error({ err: error }, 'audit trail flush failed'));
    writing = queued;
    return queued;
  };

  function schedule(): void {
    if (closed || timer) return;
    timer = setTimeout(() => void flush(), intervalMs);
    // a waiting audit row does not keep the process alive; close() writes it
    timer.unref();
  }

  return {
    record: (event) => {
      buffer.push({ row: auditRow(event, clock.now()), retried: false });
      if (buffer.length >= MAX_WAITING || closed) void flush();
      else schedule();
    },
    flush,
    close: async () => {
      closed = true;
      await flush();
      // a row that failed once gets its retry now: nothing is left for a timer after close
      if (buffer.length > 0) await flush();
    },
  };
}
