import fs from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { type DatabaseHandle, openDatabase } from '../../db/connection.js';
import { waitFor } from '../helpers/processes.js';
import { tempDir } from '../helpers/tempDir.js';

/**
 * SQLite's write-ahead log is copied back into the database file by a checkpoint. A commit on the
 * request thread no longer does it (it waited for two fsyncs there, stalling every request):
 * the process that runs the background work checkpoints on a thread of its own. The database
 * file only grows when a checkpoint copies new pages into it, which is what these tests watch.
 */

const handles: DatabaseHandle[] = [];
afterEach(async () => {
  for (const handle of handles.splice(0)) await handle.close();
});

const databaseFile = (dir: string) => path.join(dir, 'fhir-facade.sqlite');
const sizeOf = (file: string) => fs.statSync(file).size;

/** About 250 pages of new rows in one commit: over SQLite's own checkpoint mark if it were still 1,000 pages a connection. */
async function writeRows(handle: DatabaseHandle, commits: number): Promise<void> {
  await sql`create table if not exists bulk (id integer primary key, body text not null)`.execute(handle.db);
  for (let i = 0; i < commits; i++) {
    await handle.db.transaction().execute(async (trx) => {
      for (let row = 0; row < 250; row++)
        await sql`insert into bulk (body) values (${'x'.repeat(4000)})`.execute(trx);
    });
  }
}

describe('WAL checkpoints on SQLite', () => {
  it('are not done by the commits of the request connection', async () => {
    const dir = tempDir();
    const handle = openDatabase({ databaseUrl: undefined, dataDir: dir });
    handles.push(handle);
    await writeRows(handle, 1);
    const before = sizeOf(databaseFile(dir));
    // 1,250 pages in five commits: SQLite's default would have checkpointed inside the fifth
    await writeRows(handle, 5);
    expect(sizeOf(databaseFile(dir))).toBe(before);
    expect(sizeOf(`${databaseFile(dir)}-wal`)).toBeGreaterThan(5_000_000);
  });

  it('are made by the checkpointer thread once the log has grown, which closes with the database', async () => {
    const dir = tempDir();
    const errors: string[] = [];
    const handle = openDatabase({
      databaseUrl: undefined,
      dataDir: dir,
      walCheckpoints: { onError: (message) => errors.push(message) },
    });
    handles.push(handle);
    const before = sizeOf(databaseFile(dir));
    // ~6 MB of log: past the size at which the thread starts (an idle gateway has none)
    await writeRows(handle, 6);
    // the rows reach the database file without another commit on this connection
    await waitFor(
      'the checkpointer to copy the log into the database',
      async () => sizeOf(databaseFile(dir)) > before + 5_000_000,
      10_000,
    );
    expect(errors).toEqual([]);
    await handles.pop()?.close();
    // closed: the last connection folded the log in and removed it
    expect(fs.existsSync(`${databaseFile(dir)}-wal`)).toBe(false);
  });
});
