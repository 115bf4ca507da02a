import fs from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import {
  Kysely,
  type MigrationResultSet,
  Migrator,
  PostgresDialect,
  SqliteAdapter,
  SqliteDialect,
  sql,
} from 'kysely';
import pg from 'pg';
import { migrations } from './migrations/index.js';
import type { Database } from './schema.js';

export type Dialect = 'sqlite' | 'postgres';

export interface DatabaseHandle {
  readonly db: Kysely<Database>;
  readonly dialect: Dialect;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  /** postgres://... selects PostgreSQL; unset selects the SQLite file `${dataDir}/fhir-facade.sqlite`. */
  readonly databaseUrl: string | undefined;
  readonly dataDir: string;
}

function openSqlite(file: string): Kysely<Database> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const sqlite = new SqliteDatabase(file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('synchronous = NORMAL');
  return new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
}

function openPostgres(connectionString: string): Kysely<Database> {
  const pool = new pg.Pool({ connectionString, max: 10 });
  // bigint counts come back as strings from pg; our counts are small, so parse them as numbers
  pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}

/** Opens the configured database. The caller owns the handle and closes it on shutdown. */
export function openDatabase(options: DatabaseOptions): DatabaseHandle {
  const dialect: Dialect = options.databaseUrl ? 'postgres' : 'sqlite';
  const db = options.databaseUrl
    ? openPostgres(options.databaseUrl)
    : openSqlite(path.join(options.dataDir, 'fhir-facade.sqlite'));
  return { db, dialect, close: () => db.destroy() };
}

/** Runs every pending migration; throws the first failure. */
export async function migrateToLatest(db: Kysely<Database>): Promise<MigrationResultSet> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    // pin Kysely's bookkeeping tables to our schema: its existence check otherwise sees other schemas' tables
    ...(await migrationSchema(db)),
  });
  const result = await migrator.migrateToLatest();
  if (result.error) throw result.error;
  return result;
}

async function migrationSchema(db: Kysely<Database>): Promise<{ migrationTableSchema?: string }> {
  if (db.getExecutor().adapter instanceof SqliteAdapter) return {};
  const result = await sql<{ schema: string }>`select current_schema() as schema`.execute(db);
  const schema = result.rows[0]?.schema;
  return schema ? { migrationTableSchema: schema } : {};
}
