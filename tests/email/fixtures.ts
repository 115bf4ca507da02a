import fs from 'node:fs';
import path from 'node:path';
import type { Kysely } from 'kysely';
import { type DatabaseHandle, migrateToLatest, openDatabase } from '../../db/connection.js';
import type { Database, OutboxRow } from '../../db/schema.js';
import { createLogger, type Logger } from '../../src/logger.js';
import { tempDir } from '../helpers/gateway.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';

/** A migrated database of one dialect in a fresh temp dir (and a fresh schema on PostgreSQL). */
export interface EmailTestDb {
  readonly db: Kysely<Database>;
  readonly dialect: 'sqlite' | 'postgres';
  readonly dataDir: string;
  /** Another connection to the same database, like a second gateway instance would have. */
  openAnother(): DatabaseHandle;
  /** PostgreSQL: another connection whose URL is moved by `move` (onto a TCP proxy); SQLite: openAnother(). */
  openVia(move: (url: string) => string): DatabaseHandle;
  /** The SQLite database and WAL files as bytes (empty on PostgreSQL). */
  rawSqliteBytes(): Buffer;
  outboxRows(): Promise<OutboxRow[]>;
  /** The mail rows only: a mail given up also queues the AuditEvent of its `mail.failed` entry. */
  mailRows(): Promise<OutboxRow[]>;
  /** The actions of the audit entries written so far, oldest first. */
  auditActions(): Promise<string[]>;
  close(): Promise<void>;
}

export async function openEmailTestDb(dialect: 'sqlite' | 'postgres'): Promise<EmailTestDb> {
  const dataDir = tempDir('ff-email-');
  let schema: TestSchema | undefined;
  if (dialect === 'postgres') schema = await createTestSchema();
  const options = { databaseUrl: schema?.url, dataDir };
  const main = openDatabase(options);
  await migrateToLatest(main.db);
  const extra: DatabaseHandle[] = [];
  return {
    db: main.db,
    dialect,
    dataDir,
    openAnother: () => {
      const handle = openDatabase(options);
      extra.push(handle);
      return handle;
    },
    openVia: (move) => {
      const handle = openDatabase({ ...options, databaseUrl: schema ? move(schema.url) : undefined });
      extra.push(handle);
      return handle;
    },
    rawSqliteBytes: () => {
      if (dialect !== 'sqlite') return Buffer.alloc(0);
      const base = path.join(dataDir, 'fhir-facade.sqlite');
      const parts = [base, `${base}-wal`, `${base}-journal`, `${base}-shm`]
        .filter((f) => fs.existsSync(f))
        .map((f) => fs.readFileSync(f));
      return Buffer.concat(parts);
    },
    outboxRows: () => main.db.selectFrom('outbox').selectAll().orderBy('id').execute(),
    mailRows: () =>
      main.db.selectFrom('outbox').selectAll().where('kind', '=', 'email').orderBy('id').execute(),
    auditActions: async () =>
      (await main.db.selectFrom('audit_log').select('action').orderBy('id').execute()).map((r) => r.action),
    close: async () => {
      for (const h of extra) await h.close();
      await main.close();
      await schema?.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A real pino logger whose JSON lines are kept, to check what was (not) logged. */
export function captureLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = createLogger('debug', { write: (line: string) => void lines.push(line) });
  return { logger, lines };
}

/** Every spelling of a code a leak could take: grouped, compact, lower case. */
export function codeForms(code: string): string[] {
  const compact = code.replace(/-/g, '');
  return [code, compact, code.toLowerCase(), compact.toLowerCase()];
}

/** Recipients that must never reach a To header: each would add a recipient or a header. */
export const INJECTED_RECIPIENTS = [
  'a@x.com\r\nBcc: c@z.com',
  'a@x.com\nBcc: c@z.com',
  'a@x.com\rBcc: c@z.com',
  'a@x.com, b@y.com',
  'a@x.com,b@y.com',
  'a@x.com; b@y.com',
  'a@x.com b@y.com',
  'Alice <a@x.com>',
  '"Alice" <a@x.com>',
  '<a@x.com>',
  'a@x.com (comment)',
  ' a@x.com',
  'a@x.com\u0000',
  'undisclosed-recipients:;',
  'not-an-address',
  '',
];
