import { Worker } from 'node:worker_threads';
import {
  type CompiledQuery,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type Kysely,
  type QueryResult,
  CompiledQuery as Raw,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
} from 'kysely';
import { projectFile } from '../src/paths.js';

/**
 * A Kysely dialect whose one SQLite connection lives on a thread of its own
 * (db/sqliteWriterThread.mjs): every statement is sent there and its result sent back, so a
 * statement never runs on the event loop, at the price of a message each way (~20-50 µs). For
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

class ThreadedSqliteDriver implements Driver {
  #thread: Worker | undefined;
  #exited: Promise<void> | undefined;
  #nextId = 0;
  readonly #waiting = new Map<number, { resolve: (reply: Reply) => void }>();
  // one connection, so one holder at a time (as Kysely's own SQLite driver): a transaction's
  // statements never interleave with another caller's
  #queue: Promise<void> = Promise.resolve();
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

  #release: () => void = () => undefined;

  async releaseConnection(): Promise<void> {
    this.#release();
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(Raw.raw('begin'));
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(Raw.raw('commit'));
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(Raw.raw('rollback'));
  }

  async destroy(): Promise<void> {
    if (!this.#thread) return;
    this.#thread.postMessage('close');
    await this.#exited;
    this.#thread = undefined;
  }

  #start(): Worker {
    const thread = new Worker(projectFile('db/sqliteWriterThread.mjs'), {
      workerData: { file: this.file, pragmas: this.pragmas },
    });
    // an idle thread never keeps the process alive; one with a statement under way does (#execute)
    thread.unref();
    thread.on('message', (reply: Reply) => {
      this.#waiting.get(reply.id)?.resolve(reply);
      this.#waiting.delete(reply.id);
      if (this.#waiting.size === 0) thread.unref();
    });
    const failAll = (message: string) => {
      for (const { resolve } of this.#waiting.values()) resolve({ id: -1, error: { message } });
      this.#waiting.clear();
      this.#thread = undefined;
    };
    thread.on('error', (error) => failAll(error.message));
    this.#exited = new Promise((resolve) =>
      thread.once('exit', () => {
        failAll('the SQLite thread exited');
        resolve();
      }),
    );
    return thread;
  }

  async #execute<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    this.#thread ??= this.#start();
    const id = this.#nextId++;
    const thread = this.#thread;
    const reply = await new Promise<Reply>((resolve) => {
      if (this.#waiting.size === 0) thread.ref();
      this.#waiting.set(id, { resolve });
      thread.postMessage({ id, sql: query.sql, parameters: query.parameters });
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
