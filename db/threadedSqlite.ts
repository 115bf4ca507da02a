import { Worker } from 'node:worker_threads';
import {
  CompiledQuery,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type Kysely,
  type QueryResult,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
} from 'kysely';
import { projectFile } from '../src/paths.js';

/**
 * A Kysely dialect whose one SQLite connection lives on a thread of its own
 * (db/sqliteWriterThread.mjs): every statement is sent there and its result sent back, so a
 * statement never runs on the event loop, at the price of a message each way. For
 * work that batches many rows per statement and that no request waits for (the audit trail).
 * The thread starts with the first statement, so a gateway that never writes one never pays
 * for it.
 */
export function threadedSqliteDialect(file: string, pragmas: readonly string[]): Dialect {
  return {
    createAdapter: () => new SqliteAdapter(),
    createDriver: () => new ThreadedSqliteDriver(file, pragmas),
    createQueryCompiler: () => new SqliteQueryCompiler(),
    createIntrospector: (db: Kysely<unknown>) => new SqliteIntrospector(db),
  };
}

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
    private readonly pragmas: readonly string[],
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
    this.#release();
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin'));
    this.#transactionThread = this.#thread;
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('commit'));
    this.#transactionThread = undefined;
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
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
      workerData: { file: this.file, pragmas: this.pragmas },
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
      for (const settle of waiting.values()) settle({ id: -1, error: { message } });
      waiting.clear();
      if (this.#thread === thread) this.#thread = undefined;
    };
    worker.on('error', (error) => fail(error.message));
    worker.once('exit', () => fail('the SQLite thread exited'));
    return thread;
  }

  async #execute<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    if (this.#destroyed) throw new Error('the threaded SQLite connection is closed');
    if (this.#transactionThread && this.#transactionThread !== this.#thread)
      throw new Error('the SQLite thread stopped during the transaction');
    this.#thread ??= this.#start();
    const { worker, waiting } = this.#thread;
    const id = this.#nextId++;
    const reply = await new Promise<Reply>((resolve, reject) => {
      try {
        worker.postMessage({ id, sql: query.sql, parameters: query.parameters });
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
