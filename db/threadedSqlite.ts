import { Worker } from 'node:worker_threads';
import {
  CompiledQuery,
  type DatabaseConnection,
  DeleteQueryNode,
  type Dialect,
  type Driver,
  InsertQueryNode,
  type Kysely,
  type QueryResult,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
  UpdateQueryNode,
} from 'kysely';
import { projectFile } from '../src/paths.js';
import { DATABASE_UNREACHABLE } from './failureCodes.js';

export interface ThreadedSqliteOptions {
  /** Set on the connection when its thread starts (db/connection.ts: WAL, busy_timeout = lockWaitMs ...). */
  readonly pragmas: readonly string[];
  /** The busy timeout: a statement that waited this long for a lock in vain closes the thread's lock gate (db/sqliteLockGate.mjs). */
  readonly lockWaitMs: number;
  /**
   * A transaction's statements are held until its commit and then run on the thread in one
   * message, in one transaction there: a message each way per transaction instead of per
   * statement. Such a transaction may only write (no select, no `returning`), and what its
   * statements did (rows affected, insert ids) is unknown until the commit: reading it throws.
   * Kysely's builders read it in `execute()`, so only compiled statements run there
   * (`executeQuery`, db/precompiled.ts), which is what a login's writes are.
   */
  readonly batchTransactions?: boolean;
}

/**
 * A Kysely dialect whose one SQLite connection lives on a thread of its own
 * (db/sqliteWriterThread.mjs): every statement is sent there and its result sent back, so a
 * statement never runs on the event loop, at the price of a message each way. For
 * work that batches many rows per statement and that no request waits for (the audit trail),
 * and, with `batchTransactions`, for a login's writes. The thread starts with the first
 * statement, so a gateway that never writes one never pays for it. A thread that dies under a
 * statement fails it as the database out of reach (`DATABASE_UNREACHABLE`): it may have committed.
 */
export function threadedSqliteDialect(file: string, options: ThreadedSqliteOptions): Dialect {
  return {
    createAdapter: () => new SqliteAdapter(),
    createDriver: () => new ThreadedSqliteDriver(file, options),
    createQueryCompiler: () => new SqliteQueryCompiler(),
    createIntrospector: (db: Kysely<unknown>) => new SqliteIntrospector(db),
  };
}

/** A statement of a batched transaction: a write whose effect is known only once the batch commits. */
function isPlainWrite(query: CompiledQuery): boolean {
  const node = query.query;
  if (InsertQueryNode.is(node) || UpdateQueryNode.is(node) || DeleteQueryNode.is(node))
    return node.returning === undefined;
  return false;
}

const notYetKnown = (): never => {
  throw new Error(
    'a batched transaction runs its statements at its commit: their results are not known before',
  );
};

/** The result of a statement held for its transaction's commit: no rows, and nothing else to read yet. */
const HELD: QueryResult<never> = Object.freeze(
  Object.defineProperties(
    { rows: [] },
    {
      numAffectedRows: { get: notYetKnown, enumerable: true },
      numChangedRows: { get: notYetKnown, enumerable: true },
      insertId: { get: notYetKnown, enumerable: true },
    },
  ),
) as QueryResult<never>;

interface Reply {
  readonly id: number;
  readonly result?: { rows: unknown[]; changes?: number; lastInsertRowid?: bigint };
  readonly error?: { message: string; code?: string };
}

/** One thread and the statements sent to it that await their reply. */
interface Thread {
  readonly worker: Worker;
  readonly waiting: Map<number, (reply: Reply) => void>;
  readonly exited: Promise<void>;
}

class ThreadedSqliteDriver implements Driver {
  #thread: Thread | undefined;
  #nextId = 0;
  #destroyed = false;
  // the thread a transaction began on: should it die, the transaction's later statements must
  // fail, not autocommit one by one on a new thread
  #transactionThread: Thread | undefined;
  // batchTransactions: the open transaction's statements, sent together at its commit
  #batch: CompiledQuery[] | undefined;
  // one connection, so one holder at a time (as Kysely's own SQLite driver): a transaction's
  // statements never interleave with another caller's
  #queue: Promise<void> = Promise.resolve();
  #release: () => void = () => undefined;
  readonly #connection: DatabaseConnection = {
    executeQuery: <R>(query: CompiledQuery) => this.#execute<R>(query),
    streamQuery: () => {
      throw new Error('streaming is not supported on the threaded SQLite connection');
    },
  };

  constructor(
    private readonly file: string,
    private readonly options: ThreadedSqliteOptions,
  ) {}

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    let release: () => void = () => undefined;
    const previous = this.#queue;
    this.#queue = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous;
    this.#release = release;
    return this.#connection;
  }

  async releaseConnection(): Promise<void> {
    this.#transactionThread = undefined;
    this.#batch = undefined;
    this.#release();
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    if (this.options.batchTransactions) {
      this.#batch = [];
      return;
    }
    await connection.executeQuery(CompiledQuery.raw('begin'));
    this.#transactionThread = this.#thread;
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    if (this.options.batchTransactions) {
      const batch = this.#batch ?? [];
      if (batch.length > 0)
        await this.#send({ batch: batch.map(({ sql, parameters }) => ({ sql, parameters })) });
      // only once committed: after a failed commit the transaction's later statements are still
      // held (a controlled transaction), never sent alone, until its rollback
      this.#batch = undefined;
      return;
    }
    await connection.executeQuery(CompiledQuery.raw('commit'));
    this.#transactionThread = undefined;
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    // nothing was sent yet, or the batch that failed was rolled back on the thread
    if (this.options.batchTransactions) {
      this.#batch = undefined;
      return;
    }
    await connection.executeQuery(CompiledQuery.raw('rollback'));
    this.#transactionThread = undefined;
  }

  async destroy(): Promise<void> {
    this.#destroyed = true;
    const thread = this.#thread;
    if (!thread) return;
    // held until it has closed its connection: an unref'd thread would let the process exit first
    thread.worker.ref();
    thread.worker.postMessage('close');
    await thread.exited;
  }

  #start(): Thread {
    const worker = new Worker(projectFile('db/sqliteWriterThread.mjs'), {
      workerData: { file: this.file, pragmas: this.options.pragmas, lockWaitMs: this.options.lockWaitMs },
    });
    const waiting = new Map<number, (reply: Reply) => void>();
    // an idle thread never keeps the process alive; one with a statement under way does (#execute)
    worker.unref();
    worker.on('message', (reply: Reply) => {
      waiting.get(reply.id)?.(reply);
      waiting.delete(reply.id);
      if (waiting.size === 0) worker.unref();
    });
    const thread: Thread = {
      worker,
      waiting,
      exited: new Promise((resolve) => worker.once('exit', () => resolve())),
    };
    // this thread's statements fail with it ('error' comes before 'exit'; each waiter is settled once)
    const fail = (message: string) => {
      for (const settle of waiting.values())
        settle({ id: -1, error: { message, code: DATABASE_UNREACHABLE } });
      waiting.clear();
      if (this.#thread === thread) this.#thread = undefined;
    };
    worker.on('error', (error) => fail(error.message));
    worker.once('exit', () => fail('the SQLite thread exited'));
    return thread;
  }

  async #execute<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    if (this.#batch) return this.#hold(query);
    return this.#send<R>({ sql: query.sql, parameters: query.parameters });
  }

  #hold<R>(query: CompiledQuery): QueryResult<R> {
    // a read would see nothing of the batch's own writes, and its rows would come only at the commit
    if (!isPlainWrite(query))
      throw new Error('a batched transaction may only write: no select, no returning');
    this.#batch?.push(query);
    return HELD as QueryResult<R>;
  }

  /** One message to the thread (a statement, or a batch) and its reply. */
  async #send<R>(message: {
    sql?: string;
    parameters?: readonly unknown[];
    batch?: { sql: string; parameters: readonly unknown[] }[];
  }): Promise<QueryResult<R>> {
    if (this.#destroyed) throw new Error('the threaded SQLite connection is closed');
    if (this.#transactionThread && this.#transactionThread !== this.#thread)
      throw new Error('the SQLite thread stopped during the transaction');
    this.#thread ??= this.#start();
    const { worker, waiting } = this.#thread;
    const id = this.#nextId++;
    const reply = await new Promise<Reply>((resolve, reject) => {
      try {
        worker.postMessage({ id, ...message });
      } catch (error) {
        // a parameter that cannot be cloned: nothing was sent, nothing waits
        reject(error);
        return;
      }
      if (waiting.size === 0) worker.ref();
      waiting.set(id, resolve);
    });
    if (reply.error) throw Object.assign(new Error(reply.error.message), { code: reply.error.code });
    const { rows, changes, lastInsertRowid } = reply.result ?? { rows: [] };
    return {
      rows: rows as R[],
      ...(changes === undefined ? {} : { numAffectedRows: BigInt(changes) }),
      ...(lastInsertRowid === undefined ? {} : { insertId: lastInsertRowid }),
    };
  }
}
