import type { Kysely } from 'kysely';
import { isDatabaseWait } from '../../db/connection.js';
import type { Database, NewAuditEntry } from '../../db/schema.js';
import type { Clock } from '../clock.js';
import { uuidv7 } from '../ids.js';
import type { Logger } from '../logger.js';
import { type AuditEvent, auditRow, detailJson, insertAuditRows } from './auditService.js';

/**
 * The batched audit trail, for high-volume events that need no transaction: refusals, token
 * failures and access events (who read which patient's data). `record` only appends to a
 * buffer, so the request path never waits for a database write; the buffer is written in
 * multi-row inserts about once a second, or sooner when MAX_WAITING rows wait. A crash loses
 * at most the rows still buffered (about one second). Unlike writeAudit, these rows are not
 * mirrored to the FHIR server as AuditEvents: `GET /admin/audit?format=fhir` exports them.
 */
export interface AuditTrail {
  /** Buffers one entry, stamped `at` (default now); never throws, never waits. */
  record(event: AuditEvent, at?: Date): void;
  /**
   * Writes everything buffered so far. A write refused by another writer's lock is tried again
   * at the next flush; any other failed write is retried once, then dropped and logged.
   */
  flush(): Promise<void>;
  /** Stops the timer and writes what is left; call before the database closes. */
  close(): Promise<void>;
  /**
   * Backpressure: undefined while fewer than MAX_UNWRITTEN recorded events wait for a flush to
   * take them (no promise made, nothing awaited on every request), else a promise settled when the
   * next flush takes them. A request awaits it before it is handled (src/middleware/auditBackpressure.ts).
   */
  room(): Promise<void> | undefined;
}

export interface AuditTrailOptions {
  /** The bulk connection: on SQLite its inserts run on a thread of their own, never on the event loop. */
  readonly db: Kysely<Database>;
  readonly clock: Clock;
  readonly logger: Logger;
  /** How long a row may wait in the buffer (default 1 s). */
  readonly intervalMs?: number;
}

/** A flush starts as soon as this many rows wait. */
export const MAX_WAITING = 200;

/**
 * Recorded events waiting for a flush to take them, past which new requests wait for it (`room`).
 * A writer slower than the requests (a practitioner's page records 20 access events, and the
 * writer shares the cores with them) then slows the requests down: without it, 25,000 such pages
 * left 300,000 events in memory, unbounded, all lost to a crash. While a lock refuses the rows, a
 * timed flush still takes them (they wait in the buffer below), once the flush before it has
 * waited out the lock: a request waits about `intervalMs` plus that wait.
 */
export const MAX_UNWRITTEN = 2_000;

/** While requests wait for the trail, the log says so at most this often, with how many flushes they waited for. */
const BEHIND_WARNING_MS = 60_000;

/** Most rows kept while the database refuses them (a long lock): the oldest go first, counted in the log. */
const MAX_BUFFERED = 20_000;

/** audit_log has 14 columns: 64 rows stay under SQLite's oldest variable limit (999 per statement). */
const ROWS_PER_INSERT = 64;

interface Pending {
  readonly row: Required<NewAuditEntry>;
  /** Already failed once for another reason than a lock. */
  readonly retried: boolean;
}

/** An event as recorded: its row is built at flush time, off the request path. */
interface Recorded {
  readonly event: AuditEvent;
  readonly at: number;
}

interface Outcome {
  /** To write at the next flush. */
  readonly again: Pending[];
  readonly dropped: number;
}

/** The trail of one gateway (one database). */
export function createAuditTrail(options: AuditTrailOptions): AuditTrail {
  const { db, clock, logger } = options;
  const intervalMs = options.intervalMs ?? 1_000;
  // rows to write again (built), then events recorded since the last flush (not built yet)
  let buffer: Pending[] = [];
  let recorded: Recorded[] = [];
  let timer: NodeJS.Timeout | undefined;
  // flushes run one after another, so rows are written in the order they were recorded
  let writing: Promise<void> = Promise.resolve();
  // a flush waiting for the one before it: later records join it instead of queueing another
  let queued: Promise<void> | undefined;
  let closed = false;
  // while another writer holds the lock, rows wait for the timer instead of a flush per record
  let locked = false;
  // requests waiting for room (MAX_UNWRITTEN): let go when a flush takes the recorded events
  let roomMade: { readonly promise: Promise<void>; readonly resolve: () => void } | undefined;
  let waitedFor = 0;
  let warnedAt = Number.NEGATIVE_INFINITY;

  /** Writes a batch in multi-row inserts; says which rows to try again and how many are given up. */
  const insert = async (batch: readonly Pending[]): Promise<Outcome> => {
    const again: Pending[] = [];
    let dropped = 0;
    for (let i = 0; i < batch.length; ) {
      // a row that failed once is tried alone: a bad row must not take 63 others with it
      const size = batch[i]?.retried ? 1 : ROWS_PER_INSERT;
      const chunk = batch.slice(i, i + size);
      i += chunk.length;
      try {
        await insertAuditRows(
          db,
          chunk.map((p) => p.row),
        );
        locked = false;
      } catch (error) {
        // a lock passes, and so does a database out of reach (a failover, a restart): neither uses up
        // the retry, and the chunks after it wait for the next flush instead of each waiting in turn
        locked = isDatabaseWait(error);
        // the count only: a row's facts stay out of the log
        if (locked)
          logger.warn({ err: error, rows: chunk.length }, 'audit trail write waits for the database');
        else logger.error({ err: error, rows: chunk.length }, 'audit trail write failed');
        if (locked) {
          again.push(...chunk, ...batch.slice(i));
          break;
        }
        for (const p of chunk) {
          if (p.retried) dropped++;
          else again.push({ row: p.row, retried: true });
        }
      }
    }
    return { again, dropped };
  };

  /**
   * The rows of the events recorded since the last flush. A request's rows (one per patient it
   * showed) share their time and detail: each is made once for them, not once per row (20 rows:
   * ~30 µs -> ~9 µs). Only within this batch: a detail object changed after a flush is made anew.
   * A row that cannot be made (a detail JSON cannot hold) is dropped and counted, never left to
   * fail every later flush.
   */
  const toPending = (events: readonly Recorded[]): Pending[] => {
    const rows: Pending[] = [];
    let unmade = 0;
    let lastAt = Number.NaN;
    let occurredAt = '';
    let lastDetail: AuditEvent['detail'];
    let detail: string | null = null;
    for (const { event, at } of events) {
      try {
        // made first, remembered after: a detail that cannot be made never passes for the last one
        if (at !== lastAt) {
          occurredAt = new Date(at).toISOString();
          lastAt = at;
        }
        if (event.detail !== lastDetail) {
          detail = detailJson(event);
          lastDetail = event.detail;
        }
        rows.push({ row: auditRow(event, { id: uuidv7(at), occurredAt, detail }), retried: false });
      } catch {
        unmade++;
      }
    }
    // the count only: a row's facts stay out of the log
    if (unmade > 0) logger.error({ rows: unmade }, 'audit trail rows dropped: they could not be made');
    return rows;
  };

  const waiting = () => buffer.length + recorded.length;

  /** What the requests wait for until the next flush takes the recorded events; the log hears of it. */
  const madeRoom = () => {
    waitedFor++;
    const now = clock.now().getTime();
    if (now - warnedAt >= BEHIND_WARNING_MS) {
      logger.warn({ flushes: waitedFor }, 'audit trail behind its writes: requests wait for it');
      warnedAt = now;
      waitedFor = 0;
    }
    let resolve = () => {};
    const promise = new Promise<void>((settle) => {
      resolve = settle;
    });
    return { promise, resolve };
  };

  const writeBuffered = async () => {
    const events = recorded;
    recorded = [];
    // let the waiting requests go first: nothing after this may keep them waiting
    roomMade?.resolve();
    roomMade = undefined;
    const batch = [...buffer, ...toPending(events)];
    buffer = [];
    if (batch.length === 0) return;
    const { again, dropped } = await insert(batch);
    const overflow = Math.max(0, again.length - MAX_BUFFERED);
    buffer = overflow > 0 ? again.slice(overflow) : again;
    if (dropped + overflow > 0)
      logger.error({ rows: dropped + overflow }, 'audit trail rows dropped after a retry');
    if (waiting() > 0) schedule();
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
    record: (event, at) => {
      // only a push here: the row (id, timestamps, JSON) is built when the buffer is written
      recorded.push({ event, at: (at ?? clock.now()).getTime() });
      if ((recorded.length >= MAX_WAITING && !locked) || closed) void flush();
      else schedule();
    },
    flush,
    room: () => {
      if (recorded.length < MAX_UNWRITTEN) return undefined;
      // a flush is queued or timed already: record() saw to it
      roomMade ??= madeRoom();
      return roomMade.promise;
    },
    close: async () => {
      closed = true;
      await flush();
      // rows that failed once get their retry now: nothing is left for a timer after close
      if (waiting() > 0) await flush();
      if (waiting() > 0) logger.error({ rows: waiting() }, 'audit trail rows not written at shutdown');
    },
  };
}
