// A SQLite connection on a thread of its own (db/threadedSqlite.ts sends it Kysely's compiled
// statements, one at a time or a transaction's writes at once), for writes that must not hold the
// event loop: the audit trail's multi-row inserts (on the request thread a 200-row flush held it for
// ~5 ms, about once a second at 250 reads/s) and a login's writes. Plain JavaScript on purpose: a
// worker file must load without a TypeScript loader.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { lockGate } from './sqliteLockGate.mjs';

const db = new Database(workerData.file, { fileMustExist: true });
for (const pragma of workerData.pragmas) db.pragma(pragma);
// a lock held long by another process: one full wait, then statements fail at once until it is gone,
// as on the request thread's connections; otherwise every statement queued here would wait in turn
const gate = lockGate(db, workerData.lockWaitMs);

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

const runBatch = db.transaction((batch) => {
  for (const statement of batch) run(statement.sql, statement.parameters);
});

parentPort.on('message', (message) => {
  if (message === 'close') {
    db.close();
    parentPort.close();
    return;
  }
  const { id, sql, parameters, batch } = message;
  try {
    if (batch) {
      // a batched transaction (db/threadedSqlite.ts): its writes in one transaction that takes the
      // write lock at BEGIN, so none of them meets a lock taken meanwhile; any failure rolls it all back
      gate.run(() => runBatch.immediate(batch));
      parentPort.postMessage({ id, result: { rows: [] } });
      return;
    }
    parentPort.postMessage({ id, result: gate.run(() => run(sql, parameters)) });
  } catch (error) {
    // the code (SQLITE_BUSY ...) travels with the message: the caller tells a lock from a fault
    parentPort.postMessage({
      id,
      error: { message: error instanceof Error ? error.message : String(error), code: error?.code },
    });
  }
});
