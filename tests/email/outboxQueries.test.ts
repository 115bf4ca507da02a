import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { type CompiledQuery, Kysely, SqliteDialect } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { migrateToLatest, openDatabase } from '../../db/connection.js';
import type { Database } from '../../db/schema.js';
import {
  DELIVERED_RETENTION_MS,
  findDueOutboxIds,
  purgeDeliveredOutboxRows,
} from '../../src/email/outbox.js';
import { tempDir } from '../helpers/gateway.js';

// Every login adds a row to the AuditEvent lane, and a delivered row stays a week: the lane's
// poll and the purge must seek to their rows, not read the lane's whole history (SQLite's plans)

const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closers) await close();
});

/** A migrated SQLite file, and a connection to it that keeps every statement it runs. */
async function recordingDatabase() {
  const dataDir = tempDir();
  const handle = openDatabase({ databaseUrl: undefined, dataDir });
  await migrateToLatest(handle.db);
  await handle.close();
  const sqlite = new SqliteDatabase(path.join(dataDir, 'fhir-facade.sqlite'));
  const ran: CompiledQuery[] = [];
  const db = new Kysely<Database>({
    dialect: new SqliteDialect({ database: sqlite }),
    log: (event) => {
      if (event.level === 'query') ran.push(event.query);
    },
  });
  closers.push(() => db.destroy());
  const plan = (query: CompiledQuery) =>
    (sqlite.prepare(`explain query plan ${query.sql}`).all(...query.parameters) as { detail: string }[])
      .map((row) => row.detail)
      .join(' | ');
  return { db, ran, plan };
}

describe('the outbox queries on SQLite', () => {
  it("a lane's poll seeks to the undelivered rows of its kind, not every row it ever delivered", async () => {
    const { db, ran, plan } = await recordingDatabase();
    const now = new Date().toISOString();
    await findDueOutboxIds(db, now, 50, 'fhir_audit_event');
    const [poll] = ran;
    if (!poll) throw new Error('no statement ran');
    expect(plan(poll)).toContain('USING INDEX outbox_lane_due (kind=? AND status=?)');
  });

  it('the purge seeks to rows delivered before its mark', async () => {
    const { db, ran, plan } = await recordingDatabase();
    await purgeDeliveredOutboxRows(db, new Date(Date.now() - DELIVERED_RETENTION_MS).toISOString());
    const [purge] = ran;
    if (!purge) throw new Error('no statement ran');
    expect(plan(purge)).toContain('USING INDEX outbox_due (status=? AND next_attempt_at<?)');
  });
});
