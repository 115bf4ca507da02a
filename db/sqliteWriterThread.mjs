// A SQLite connection on a thread of its own (db/threadedSqlite.ts sends it Kysely's compiled
// statements), for batched writes no request waits for: the audit trail's multi-row inserts. On
// the request thread a 200-row flush held the event loop for ~5 ms, about once a second at 250
// reads/s. Plain JavaScript on purpose: a worker file must load without a TypeScript loader.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const db = new Database(workerData.file, { fileMustExist: true });
for (const pragma of workerData.pragmas) db.pragma(pragma);

// prepared once per SQL text, as on the request thread (db/connection.ts)
const statements = new Map();
const prepare = (sql) => {
  let statement = statements.get(sql);
  if (!statement) {
    statement = db.prepare(sql);
    if (statements.size >= 100) statements.delete(statements.keys().next().value);
    statements.set(sql, statement);
  }
  return statement;
};

const run = (sql, parameters) => {
  const statement = prepare(sql);
  if (statement.reader) return { rows: statement.all(parameters) };
  const { changes, lastInsertRowid } = statement.run(parameters);
  return { rows: [], changes, lastInsertRowid: BigInt(lastInsertRowid) };
};

parentPort.on('message', (message) => {
  if (message === 'close') {
    db.close();
    parentPort.close();
    return;
  }
  const { id, sql, parameters } = message;
  try {
    parentPort.postMessage({ id, result: run(sql, parameters) });
  } catch (error) {
    // the code (SQLITE_BUSY ...) travels with the message: the caller tells a lock from a fault
    parentPort.postMessage({
      id,
      error: { message: error instanceof Error ? error.message : String(error), code: error?.code },
    });
  }
});
