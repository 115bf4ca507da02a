import type { Resource } from '@medplum/fhirtypes';
import Database from 'better-sqlite3';
import { ownerOnly } from '../../fileModes.js';

/** What a write did to a resource: the first version, a later version, or a delete. */
export type JournalOp = 'create' | 'update' | 'delete';

/** One resource version (or delete) as it was written, in the order it was written. */
export interface JournalEntry {
  readonly op: JournalOp;
  readonly resourceType: string;
  readonly id: string;
  readonly versionId: string;
  readonly lastUpdated: string;
  /** The full resource of that version, meta included; absent for a delete. */
  readonly resource?: Resource;
}

export interface HistoryPage {
  readonly offset?: number;
  readonly limit?: number;
}

interface JournalRow {
  op: JournalOp;
  resource_type: string;
  resource_id: string;
  version_id: string;
  last_updated: string;
  body: string | null;
}

const SCHEMA_VERSION = 1;

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS fhir_journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    version_id TEXT NOT NULL,
    last_updated TEXT NOT NULL,
    body TEXT
  );
  CREATE INDEX IF NOT EXISTS fhir_journal_by_resource ON fhir_journal (resource_type, resource_id, seq);
`;

const COLUMNS = 'op, resource_type, resource_id, version_id, last_updated, body';

/**
 * Append-only log of every resource version written to the embedded FHIR server, in SQLite.
 * The in-memory repository is rebuilt from it at start; history and vread are answered from it.
 */
export class ResourceJournal {
  private readonly db: Database.Database;
  private readonly statements: ReturnType<typeof prepareStatements>;

  private constructor(db: Database.Database) {
    this.db = db;
    this.statements = prepareStatements(db);
  }

  /** Opens (creating if needed) the journal file in WAL mode. */
  static open(file: string): ResourceJournal {
    ownerOnly(file);
    const db = new Database(file);
    try {
      db.pragma('journal_mode = WAL');
      // WAL + NORMAL survives a crash of this process; only an OS crash can lose the last writes.
      db.pragma('synchronous = NORMAL');
      migrate(db);
      return new ResourceJournal(db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  append(entry: JournalEntry): void {
    this.statements.insert.run(
      entry.op,
      entry.resourceType,
      entry.id,
      entry.versionId,
      entry.lastUpdated,
      entry.resource ? JSON.stringify(entry.resource) : null,
    );
  }

  /** The newest version of every resource not deleted, in the order the resources were first created. */
  currentResources(): Resource[] {
    return this.statements.current.all().map((row) => parseBody(row));
  }

  /** The newest journal entry of one resource, e.g. to tell a deleted resource from one never created. */
  latest(resourceType: string, id: string): JournalEntry | undefined {
    const row = this.statements.latest.get(resourceType, id);
    return row && toEntry(row);
  }

  version(resourceType: string, id: string, versionId: string): JournalEntry | undefined {
    const row = this.statements.version.get(resourceType, id, versionId);
    return row && toEntry(row);
  }

  /** Versions of one resource, newest first, as FHIR history orders them. */
  history(resourceType: string, id: string, page: HistoryPage = {}): JournalEntry[] {
    const limit = page.limit ?? -1; // SQLite: a negative LIMIT means no limit
    return this.statements.history.all(resourceType, id, limit, page.offset ?? 0).map(toEntry);
  }

  countVersions(resourceType: string, id: string): number {
    return this.statements.count.get(resourceType, id)?.n ?? 0;
  }

  /** The largest all-digit resource id ever written (0 when none): numeric ids continue after it, never reused. */
  maxNumericId(): number {
    return this.statements.maxNumericId.get()?.n ?? 0;
  }

  begin(): void {
    this.db.exec('BEGIN IMMEDIATE');
  }

  commit(): void {
    this.db.exec('COMMIT');
  }

  rollback(): void {
    if (this.db.inTransaction) {
      this.db.exec('ROLLBACK');
    }
  }

  close(): void {
    if (this.db.open) {
      this.db.close();
    }
  }
}

function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true });
  if (typeof version === 'number' && version > SCHEMA_VERSION) {
    throw new Error(`FHIR journal schema version ${version} is newer than this code understands`);
  }
  db.exec(SCHEMA);
  db.pragma(`user_version = ${SCHEMA_VERSION}`);
}

function prepareStatements(db: Database.Database) {
  return {
    insert: db.prepare<[JournalOp, string, string, string, string, string | null]>(
      `INSERT INTO fhir_journal (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)`,
    ),
    current: db.prepare<[], JournalRow>(
      `SELECT ${COLUMNS} FROM fhir_journal j
       JOIN (SELECT MIN(seq) AS first_seq, MAX(seq) AS last_seq FROM fhir_journal GROUP BY resource_type, resource_id) r
         ON j.seq = r.last_seq
       WHERE j.op <> 'delete'
       ORDER BY r.first_seq`,
    ),
    latest: db.prepare<[string, string], JournalRow>(
      `SELECT ${COLUMNS} FROM fhir_journal WHERE resource_type = ? AND resource_id = ? ORDER BY seq DESC LIMIT 1`,
    ),
    version: db.prepare<[string, string, string], JournalRow>(
      `SELECT ${COLUMNS} FROM fhir_journal WHERE resource_type = ? AND resource_id = ? AND version_id = ?`,
    ),
    history: db.prepare<[string, string, number, number], JournalRow>(
      `SELECT ${COLUMNS} FROM fhir_journal WHERE resource_type = ? AND resource_id = ?
       ORDER BY seq DESC LIMIT ? OFFSET ?`,
    ),
    count: db.prepare<[string, string], { n: number }>(
      'SELECT COUNT(*) AS n FROM fhir_journal WHERE resource_type = ? AND resource_id = ?',
    ),
    maxNumericId: db.prepare<[], { n: number | null }>(
      "SELECT MAX(CAST(resource_id AS INTEGER)) AS n FROM fhir_journal WHERE resource_id NOT GLOB '*[^0-9]*'",
    ),
  };
}

function toEntry(row: JournalRow): JournalEntry {
  return {
    op: row.op,
    resourceType: row.resource_type,
    id: row.resource_id,
    versionId: row.version_id,
    lastUpdated: row.last_updated,
    ...(row.body === null ? {} : { resource: parseBody(row) }),
  };
}

function parseBody(row: JournalRow): Resource {
  return JSON.parse(row.body ?? 'null') as Resource;
}
