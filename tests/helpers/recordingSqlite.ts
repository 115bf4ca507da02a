import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { type CompiledQuery, Kysely, SqliteDialect } from 'kysely';
import { migrateToLatest, openDatabase } from '../../db/connection.js';
import type { Database } from '../../db/schema.js';
import { tempDir } from './gateway.js';

/**
 * A migrated SQLite file and a connection to it that keeps every statement it runs, with SQLite's
 * plan for any of them: for tests that a query seeks by an index instead of reading a table whole.
 */
export async function recordingSqlite() {
  const dataDir = tempDir();
  const handle = openDatabase({ databaseUrl: undefined, dataDir });
  await migrateToLatest(handle.db);
  await handle.close();
  const sqlite = new SqliteDatabase(path.join(dataDir, 'fhir-facade.sqlite'));
  sqlite.pragma('foreign_keys = ON');
  const ran: CompiledQuery[] = [];
  const db = new Kysely<Database>({
    dialect: new SqliteDialect({ database: sqlite }),
    log: (event) => {
      if (event.level === 'query') ran.push(event.query);
    },
  });
  const plan = (query: CompiledQuery) =>
    (sqlite.prepare(`explain query plan ${query.sql}`).all(...query.parameters) as { detail: string }[])
      .map((row) => row.detail)
      .join(' | ');
  return { db, ran, plan, close: () => db.destroy() };
}
