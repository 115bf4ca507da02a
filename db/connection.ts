import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import SqliteDatabase from 'better-sqlite3';
import {
  Kysely,
  type MigrationResultSet,
  Migrator,
  PostgresDialect,
  type PostgresPool,
  type PostgresPoolClient,
  SqliteAdapter,
  SqliteDialect,
  sql,
} from 'kysely';
import type pg from 'pg';
import { ownerOnly } from '../src/fileModes.js';
import { onFirstUse } from '../src/onFirstUse.js';
import { projectFile } from '../src/paths.js';
import { migrations } from './migrations/index.js';
import type { Database } from './schema.js';
import { type LockGate, lockGate } from './sqliteLockGate.js';
import { threadedSqliteDialect } from './threadedSqlite.js';

export type Dialect = 'sqlite' | 'postgres';

/** The PostgreSQL driver, loaded when PostgreSQL is first used: the SQLite default never loads it. */
const pgDriver = onFirstUse<typeof pg>('pg');

/** How long a statement waits for another writer's lock before it fails (SQLITE_BUSY, PostgreSQL 55P03). */
const LOCK_WAIT_MS = 2_000;

/** A statement refused because another writer held the lock too long, or it ran over its time (SQLite, PostgreSQL). */
export function isLockTimeout(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED' || code === '55P03' || code === '57014';
}

/**
 * Runs `work` in a transaction whose statements wait at most `ms` for a lock on PostgreSQL; on SQLite
 * as it is (its readers do not wait, and its background connection has a short wait of its own).
 * For work a lock held elsewhere makes moot: a lease renewal while the table is locked, a question
 * the lock answers by itself. Each waited the full LOCK_WAIT_MS, one after the other.
 */
export async function withShortLockWait<T>(
  db: Kysely<Database>,
  dialect: Dialect,
  ms: number,
  work: (db: Kysely<Database>) => Promise<T>,
): Promise<T> {
  if (dialect !== 'postgres') return work(db);
  return db.transaction().execute(async (trx) => {
    await sql`select set_config('lock_timeout', ${`${ms}ms`}, true)`.execute(trx);
    return work(trx);
  });
}

/** The `code` of a statement PostgreSQL left unanswered past its budget (the connection was dropped). */
export const QUERY_TIMEOUT = 'QUERY_TIMEOUT';
/** The `code` of a failure to reach PostgreSQL, or of a connection lost under a statement. */
export const DATABASE_UNREACHABLE = 'DATABASE_UNREACHABLE';

/**
 * PostgreSQL could not be reached or stopped answering: no connection within the wait, one lost,
 * a statement unanswered past its budget, or the server shutting down. Unlike a lock timeout, a
 * statement cut off this way may have been done (a COMMIT whose answer was lost). Only errors of
 * the database's own pool are tagged so: a client's connection reset elsewhere is not one.
 */
export function isDatabaseUnreachable(error: unknown): boolean {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  if (code === QUERY_TIMEOUT || code === DATABASE_UNREACHABLE) return true;
  // class 08: connection exceptions; 57P01-57P03: the server shutting down, crashed or starting
  return typeof code === 'string' && /^(08...|57P0[1-3])$/.test(code);
}

/** The database is busy or out of reach for now (a lock held too long, an outage): retry later, not a bug. */
export function isDatabaseWait(error: unknown): boolean {
  return isLockTimeout(error) || isDatabaseUnreachable(error);
}

/**
 * An error tagged as the database out of reach (its cause kept for the log), its message saying
 * why as far as that is safe to show an operator: the server's refusal (no such database or role,
 * too many clients) or the socket's error code. pg never puts the password in either.
 */
function unreachable(error: unknown): Error {
  return Object.assign(new Error(`the database could not be reached: ${whyUnreachable(error)}`), {
    code: DATABASE_UNREACHABLE,
    cause: error,
  });
}

/** Why a connection failed, in a few words: "refused: database "x" does not exist (3D000)", "ECONNREFUSED". */
export function whyUnreachable(error: unknown): string {
  const pgLoaded = pgDriver.ifLoaded();
  // no pg loaded, no pg error: a SQLite error does not load the driver to be told apart
  if (pgLoaded && error instanceof pgLoaded.DatabaseError) return `refused: ${error.message} (${error.code})`;
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && /^[A-Z0-9_]{2,40}$/.test(code)) return code;
  // pg's own fixed wordings ("timeout exceeded when trying to connect", "Connection terminated unexpectedly")
  if (
    typeof message === 'string' &&
    /^(timeout exceeded when trying to connect|Connection terminated[a-z ]*)$/.test(message)
  )
    return message;
  return 'the connection failed';
}

const SOCKET_FAILURES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);

/**
 * Whether a statement failed because its connection did (pg's "Connection terminated…", a socket
 * error), not because the server refused it (a SQLSTATE) or a bug of ours threw (a TypeError).
 */
function isConnectionFailure(error: unknown): boolean {
  const pgLoaded = pgDriver.ifLoaded();
  if (pgLoaded && error instanceof pgLoaded.DatabaseError) return false;
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && SOCKET_FAILURES.has(code)) return true;
  return (
    typeof message === 'string' &&
    /^(Connection terminated|Client has encountered a connection error|Client was closed)/.test(message)
  );
}

/**
 * A read that must not see "not committed yet" as "not committed": on PostgreSQL it takes a share
 * lock on its rows, which waits for a COMMIT still in flight on a connection given up on (bounded
 * by the lock wait). SQLite commits before it answers, so the read is left as it is.
 */
export function afterPendingCommits<Q extends { forShare(): Q }>(query: Q, dialect: Dialect): Q {
  return dialect === 'postgres' ? query.forShare() : query;
}

export interface DatabaseHandle {
  readonly db: Kysely<Database>;
  /**
   * For background work (outbox lanes, housekeeping, lease renewals). On SQLite it is a
   * second connection that gives up on a lock at once: better-sqlite3 waits for a lock on the
   * event loop, so a retrying background writer must never stall every request for the busy
   * timeout. On PostgreSQL it is the same pool (its waits do not block the process).
   */
  readonly background: Kysely<Database>;
  /**
   * For batched writes no request waits for (the audit trail's flushes). On SQLite a connection on
   * a thread of its own (db/threadedSqlite.ts): its multi-row inserts never hold the event loop.
   * On PostgreSQL the same pool.
   */
  readonly bulk: Kysely<Database>;
  /**
   * For long reads no request waits for (the metrics gauges' counts over the live sessions). On
   * SQLite a threaded connection of its own, so they hold neither the event loop nor the audit
   * trail's flushes; its thread starts with its first statement. On PostgreSQL the same pool.
   */
  readonly reports: Kysely<Database>;
  /**
   * SQLite only: single-statement reads on a connection of their own, without Kysely (the
   * caller check every authenticated request makes, userRepository.ts findCaller). Absent on
   * PostgreSQL, where those reads go through `db`.
   */
  readonly lookups?: LookupConnection;
  readonly dialect: Dialect;
  close(): Promise<void>;
}

/**
 * One read statement at a time, each in its own read transaction (autocommit): it sees what is
 * committed when it runs, and never runs inside a transaction of the main connection (it does not
 * wait for Kysely's lock on that connection either).
 */
export interface LookupConnection {
  /**
   * The values of the first row `sql` selects with these values bound in order, in the order of
   * its select list, or undefined. An array, not an object: better-sqlite3 builds a row object in
   * C++ by setting each column's name through V8's slow paths, more CPU than the query itself.
   */
  getValues(sql: string, parameters: readonly unknown[]): readonly unknown[] | undefined;
}

export interface DatabaseOptions {
  /** postgres://... selects PostgreSQL; unset selects the SQLite file `${dataDir}/fhir-facade.sqlite`. */
  readonly databaseUrl: string | undefined;
  readonly dataDir: string;
  /** PostgreSQL: drop a connection whose statement goes unanswered this long (unset: no bound). */
  readonly queryTimeoutMs?: number;
  /**
   * SQLite: checkpoint the write-ahead log on a thread of this process (one process of a cluster
   * does; see walCheckpointer.mjs), and say why when a checkpoint fails.
   */
  readonly walCheckpoints?: { readonly onError: (message: string) => void };
}

/** How long a background write on SQLite waits for a lock before it gives up (its work is retried later). */
const BACKGROUND_LOCK_WAIT_MS = 50;

interface SqliteConnection {
  readonly db: Kysely<Database>;
  /** Kysely closes the file only when a query ever ran on it: a connection never used stayed open. */
  close(): Promise<void>;
}

/** The settings of every connection to the gateway's SQLite file (the log mode is the file's own). */
function connectionPragmas(lockWaitMs: number): string[] {
  return [
    'foreign_keys = ON',
    // a write waits at most this long for another writer's lock, then fails: a request answers 503 in
    // seconds rather than hanging behind a long transaction (provisioning's budget is 6 s in all);
    // after one such wait in vain the connection stops waiting until the lock is gone (sqliteLockGate.ts)
    `busy_timeout = ${lockWaitMs}`,
    'synchronous = NORMAL',
    // the checkpoints are the checkpointer thread's (below): a connection copies the log back into
    // the database itself, on the request thread, only when the log has grown this large anyway
    `wal_autocheckpoint = ${FALLBACK_CHECKPOINT_PAGES}`,
  ];
}

function openSqlite(file: string, lockWaitMs = LOCK_WAIT_MS): SqliteConnection {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const sqlite = new SqliteDatabase(file);
  sqlite.pragma('journal_mode = WAL');
  for (const pragma of connectionPragmas(lockWaitMs)) sqlite.pragma(pragma);
  const gate = lockGate(sqlite, lockWaitMs);
  const db = new Kysely<Database>({
    dialect: new SqliteDialect({ database: withStatementCache(sqlite, gate) }),
  });
  return {
    db,
    close: async () => {
      await db.destroy();
      if (sqlite.open) sqlite.close();
    },
  };
}

/**
 * The lookup connection (DatabaseHandle.lookups): the same settings as the main connection, its
 * statements prepared once and run through the lock gate. Through Kysely the caller check cost
 * 10–18 µs more CPU per read request (its connection lock, five async layers, `.all` into an
 * array; paired bench:compare, 16 rounds, 2026-12-06).
 */
function openLookups(file: string): LookupConnection & { close(): void } {
  const sqlite = new SqliteDatabase(file);
  for (const pragma of connectionPragmas(LOCK_WAIT_MS)) sqlite.pragma(pragma);
  const prepared = statementCache(sqlite, lockGate(sqlite, LOCK_WAIT_MS), { raw: true });
  return {
    getValues: (sql, parameters) => prepared(sql).get(...parameters) as readonly unknown[] | undefined,
    close: () => {
      if (sqlite.open) sqlite.close();
    },
  };
}

/**
 * SQLite's own checkpoint (every 1,000 pages) ran inside whichever commit crossed the mark, on the
 * request thread, and waited there for two fsyncs: a ~10 ms stall of every request every few dozen
 * logins. A connection still does it past this many pages (~40 MB of log), should the thread stop.
 */
const FALLBACK_CHECKPOINT_PAGES = 10_000;
/** How often the checkpointer thread copies the log back (a passive checkpoint: it never waits for anyone). */
const CHECKPOINT_INTERVAL_MS = 500;

/**
 * The checkpointer thread starts once the log first passes this size (the mark SQLite itself
 * used, ~1,000 pages): an idle gateway never pays its ~10 MB, as the password thread is started
 * by the first login. Until then a connection checkpoints itself past FALLBACK_CHECKPOINT_PAGES.
 */
const CHECKPOINTER_START_BYTES = 4 * 1024 * 1024;
const LOG_SIZE_POLL_MS = 1_000;

interface Checkpointer {
  close(): Promise<void>;
}

function startCheckpointerThread(file: string, onError: (message: string) => void): Checkpointer {
  const worker = new Worker(projectFile('db/walCheckpointer.mjs'), {
    workerData: { file, intervalMs: CHECKPOINT_INTERVAL_MS },
  });
  // the thread alone never keeps the process alive
  worker.unref();
  worker.on('message', (message: { error?: string }) => {
    if (message.error) onError(message.error);
  });
  // a thread that failed leaves the checkpoints to the connections (FALLBACK_CHECKPOINT_PAGES)
  worker.on('error', (error) => onError(error.message));
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return {
    close: async () => {
      // held until it has checkpointed and closed: an unref'd thread would let the process exit first
      worker.ref();
      worker.postMessage('close');
      await exited;
    },
  };
}

/** Watches the log's size and starts the checkpointer thread when it first passes CHECKPOINTER_START_BYTES. */
function startCheckpointer(file: string, onError: (message: string) => void): Checkpointer {
  let thread: Checkpointer | undefined;
  const poll = setInterval(() => {
    let size = 0;
    try {
      size = fs.statSync(`${file}-wal`).size;
    } catch {
      // no log yet
    }
    if (size < CHECKPOINTER_START_BYTES) return;
    clearInterval(poll);
    thread = startCheckpointerThread(file, onError);
  }, LOG_SIZE_POLL_MS);
  poll.unref();
  return {
    close: async () => {
      clearInterval(poll);
      await thread?.close();
    },
  };
}

/** Most prepared statements kept per connection (the gateway runs a few dozen distinct queries). */
const STATEMENT_CACHE_SIZE = 500;

/**
 * Kysely prepares every query afresh; preparing cost more than running a primary-key lookup.
 * The same SQL text gets the same prepared statement back (better-sqlite3 statements are
 * reusable, and this connection is used from one thread, one statement at a time).
 */
function withStatementCache(sqlite: SqliteDatabase.Database, gate: LockGate): SqliteDatabase.Database {
  const prepared = statementCache(sqlite, gate);
  return new Proxy(sqlite, {
    get(target, property, receiver) {
      return property === 'prepare' ? prepared : Reflect.get(target, property, receiver);
    },
  });
}

/**
 * The connection's statement for an SQL text, prepared once and run through the lock gate.
 * `raw`: its rows are arrays of values (better-sqlite3 refuses raw mode on a statement that returns no rows).
 */
function statementCache(
  sqlite: SqliteDatabase.Database,
  gate: LockGate,
  options: { readonly raw?: boolean } = {},
): (source: string) => GatedStatement {
  const cache = new Map<string, GatedStatement>();
  return (source) => {
    let statement = cache.get(source);
    if (!statement) {
      const prepared = sqlite.prepare(source);
      statement = gated(options.raw ? prepared.raw(true) : prepared, gate);
      if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
      cache.set(source, statement);
    }
    return statement;
  };
}

/** What Kysely's SQLite driver and the lookup connection use of a statement, each run through the lock gate (sqliteLockGate.ts). */
type GatedStatement = Pick<SqliteDatabase.Statement, 'reader' | 'run' | 'all' | 'iterate' | 'get'>;

function gated(statement: SqliteDatabase.Statement, gate: LockGate): GatedStatement {
  return {
    reader: statement.reader,
    run: (...params: unknown[]) => gate.run(() => statement.run(...params)),
    all: (...params: unknown[]) => gate.run(() => statement.all(...params)),
    iterate: (...params: unknown[]) => gate.run(() => statement.iterate(...params)),
    get: (...params: unknown[]) => gate.run(() => statement.get(...params)),
  } as GatedStatement;
}

function openPostgres(connectionString: string, queryTimeoutMs: number | undefined): Kysely<Database> {
  // the same bound on lock waits as SQLite's busy timeout, and on waiting for a pooled connection
  const driver = pgDriver();
  const pool = new driver.Pool({
    connectionString,
    max: 10,
    lock_timeout: LOCK_WAIT_MS,
    connectionTimeoutMillis: 2 * LOCK_WAIT_MS,
    // a peer gone without a word (a cut network) is found by TCP keepalive, not only by the next query
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  });
  // a pooled connection the server closes (a restart, a failover, an idle reaper) emits 'error' on
  // the pool: unheard, it killed the process. The pool drops that client; the next query opens another.
  pool.on('error', () => {});
  // the pool listens on idle clients only: a checked-out one (inside a transaction) whose connection
  // ends emits 'error' too, which killed the process. Its query rejects, and the pool drops it on release.
  pool.on('connect', (client) => client.on('error', () => {}));
  // bigint counts come back as strings from pg; our counts are small, so parse them as numbers
  driver.types.setTypeParser(driver.types.builtins.INT8, (v) => Number(v));
  return new Kysely<Database>({
    dialect: new PostgresDialect({ pool: withQueryTimeout(pool, queryTimeoutMs) }),
  });
}

/** The pool, as Kysely sees it: failures to reach the server tagged, every statement bound to `timeoutMs`. */
function withQueryTimeout(pool: pg.Pool, timeoutMs: number | undefined): PostgresPool {
  return {
    connect: async () => {
      try {
        return withStatementTimeout(await pool.connect(), timeoutMs);
      } catch (error) {
        // any failure to get a connection, a refusal by the server included (too many clients, shutting down)
        throw unreachable(error);
      }
    },
    end: () => pool.end(),
  };
}

/**
 * A statement a hung server never answers would hold its request, and its pooled connection, for
 * good: past `timeoutMs` the connection is dropped, which fails the statement (`QUERY_TIMEOUT`),
 * and the pool opens a fresh one. pg's own query_timeout leaves the connection waiting instead,
 * and hands the next statement to it.
 */
function withStatementTimeout(client: pg.PoolClient, timeoutMs: number | undefined): PostgresPoolClient {
  let timedOut = false;
  const bounded = async (text: string, parameters: readonly unknown[]) => {
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            // pg's socket (private): were it ever absent, the statement would wait on, never throw here
            (
              client as unknown as { connection?: { stream?: { destroy(): void } } }
            ).connection?.stream?.destroy();
          }, timeoutMs);
    try {
      return await client.query(text, [...parameters]);
    } catch (error) {
      if (!timedOut) throw isConnectionFailure(error) ? unreachable(error) : error;
      throw Object.assign(new Error(`the database did not answer within ${timeoutMs} ms`), {
        code: QUERY_TIMEOUT,
        cause: error,
      });
    } finally {
      clearTimeout(timer);
    }
  };
  // a cursor (Kysely's stream()) is handed over as it is: it reads in steps of its own
  const query = (textOrCursor: unknown, parameters: readonly unknown[]) =>
    typeof textOrCursor === 'string'
      ? bounded(textOrCursor, parameters)
      : client.query(textOrCursor as never);
  return {
    query: query as unknown as PostgresPoolClient['query'],
    release: () => client.release(timedOut),
  };
}

/** Opens the configured database. The caller owns the handle and closes it on shutdown. */
export function openDatabase(options: DatabaseOptions): DatabaseHandle {
  const dialect: Dialect = options.databaseUrl ? 'postgres' : 'sqlite';
  if (options.databaseUrl) {
    const db = openPostgres(options.databaseUrl, options.queryTimeoutMs);
    return { db, background: db, bulk: db, reports: db, dialect, close: () => db.destroy() };
  }
  const file = path.join(options.dataDir, 'fhir-facade.sqlite');
  ownerOnly(file);
  const main = openSqlite(file);
  const background = openSqlite(file, BACKGROUND_LOCK_WAIT_MS);
  const lookups = openLookups(file);
  // its waits for a lock block only its own thread, so it waits as long as a request would
  const bulk = new Kysely<Database>({
    dialect: threadedSqliteDialect(file, connectionPragmas(LOCK_WAIT_MS)),
  });
  const reports = new Kysely<Database>({
    dialect: threadedSqliteDialect(file, connectionPragmas(LOCK_WAIT_MS)),
  });
  const checkpointer = options.walCheckpoints
    ? startCheckpointer(file, options.walCheckpoints.onError)
    : undefined;
  return {
    db: main.db,
    background: background.db,
    bulk,
    reports,
    lookups,
    dialect,
    close: async () => {
      await reports.destroy();
      await bulk.destroy();
      await checkpointer?.close();
      lookups.close();
      await background.close();
      await main.close();
    },
  };
}

/** Runs every pending migration; throws the first failure. */
async function migratorFor(db: Kysely<Database>): Promise<Migrator> {
  return new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    // pin Kysely's bookkeeping tables to our schema: its existence check otherwise sees other schemas' tables
    ...(await migrationSchema(db)),
  });
}

export async function migrateToLatest(db: Kysely<Database>): Promise<MigrationResultSet> {
  const result = await (await migratorFor(db)).migrateToLatest();
  if (result.error) throw result.error;
  return result;
}

/** Up to and including the migration `name`: for tests of what a later migration does to existing rows. */
export async function migrateUpTo(db: Kysely<Database>, name: string): Promise<MigrationResultSet> {
  const result = await (await migratorFor(db)).migrateTo(name);
  if (result.error) throw result.error;
  return result;
}

async function migrationSchema(db: Kysely<Database>): Promise<{ migrationTableSchema?: string }> {
  if (db.getExecutor().adapter instanceof SqliteAdapter) return {};
  const result = await sql<{ schema: string }>`select current_schema() as schema`.execute(db);
  const schema = result.rows[0]?.schema;
  return schema ? { migrationTableSchema: schema } : {};
}
