import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DatabaseHandle, migrateToLatest, openDatabase } from '../../db/connection.js';
import { tempDir } from '../helpers/tempDir.js';

/**
 * SQLite's bulk connection (db/threadedSqlite.ts) runs its statements on a thread of its own.
 * What must hold: statements and transactions behave as on any connection, a failure keeps
 * SQLite's code (the audit trail tells a lock from a fault by it), and while it waits for
 * another writer's lock the event loop goes on: that is what it is for.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the bulk SQLite connection on its own thread', () => {
  let handle: DatabaseHandle;
  beforeAll(async () => {
    handle = openDatabase({ databaseUrl: undefined, dataDir: tempDir() });
    await migrateToLatest(handle.db);
  });
  afterAll(() => handle.close());

  const window = (bucket: string, count: number) => ({
    bucket,
    window_start: '2026-01-01T00:00:00.000Z',
    count,
  });
  /** A bucket's count as one connection reads it. */
  const countOf = (db: DatabaseHandle['db'], bucket: string) =>
    db.selectFrom('rate_limits').select('count').where('bucket', '=', bucket).executeTakeFirst();

  it('writes what the request thread then reads, and reads what it wrote', async () => {
    const inserted = await handle.bulk
      .insertInto('rate_limits')
      .values([window('bulk-a', 1), window('bulk-b', 2)])
      .executeTakeFirst();
    expect(inserted.numInsertedOrUpdatedRows).toBe(2n);
    const seen = await handle.db
      .selectFrom('rate_limits')
      .select(['bucket', 'count'])
      .where('bucket', 'like', 'bulk-%')
      .orderBy('bucket')
      .execute();
    expect(seen).toEqual([
      { bucket: 'bulk-a', count: 1 },
      { bucket: 'bulk-b', count: 2 },
    ]);
    await handle.db.insertInto('rate_limits').values(window('main-c', 3)).execute();
    expect(await countOf(handle.bulk, 'main-c')).toEqual({ count: 3 });
  });

  it('commits a transaction whole and rolls a failed one back', async () => {
    await handle.bulk.transaction().execute(async (trx) => {
      await trx.insertInto('rate_limits').values(window('trx-1', 1)).execute();
      await trx.insertInto('rate_limits').values(window('trx-2', 2)).execute();
    });
    await expect(
      handle.bulk.transaction().execute(async (trx) => {
        await trx.insertInto('rate_limits').values(window('trx-3', 3)).execute();
        await trx.insertInto('rate_limits').values(window('trx-1', 9)).execute(); // duplicate key
      }),
    ).rejects.toMatchObject({ code: expect.stringMatching(/^SQLITE_CONSTRAINT/) });
    const buckets = await handle.db
      .selectFrom('rate_limits')
      .select('bucket')
      .where('bucket', 'like', 'trx-%')
      .orderBy('bucket')
      .execute();
    expect(buckets.map((b) => b.bucket)).toEqual(['trx-1', 'trx-2']);
  });

  it('waits for a lock off the event loop, then writes', async () => {
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    let waiting: Promise<unknown> | undefined;
    let written = false;
    try {
      await handle.db.transaction().execute(async (trx) => {
        // the request thread's connection holds the write lock for the next 150 ms
        await trx.insertInto('rate_limits').values(window('lock-holder', 1)).execute();
        waiting = handle.bulk
          .insertInto('rate_limits')
          .values(window('lock-waiter', 1))
          .execute()
          .then(() => {
            written = true;
          });
        await sleep(150);
        expect(written).toBe(false);
      });
      await waiting;
    } finally {
      clearInterval(ticker);
    }
    expect(written).toBe(true);
    // had the wait been on this thread (better-sqlite3 sleeps in its busy handler), no timer would have run
    expect(ticks).toBeGreaterThan(10);
    expect(await countOf(handle.db, 'lock-waiter')).toEqual({ count: 1 });
  });

  it('refuses a value it cannot send, and goes on working', async () => {
    await expect(
      handle.bulk
        .insertInto('rate_limits')
        .values({ bucket: Symbol('no') as never, window_start: 'x', count: 1 })
        .execute(),
    ).rejects.toThrow(/could not be cloned/);
    await handle.bulk.insertInto('rate_limits').values(window('after-refusal', 1)).execute();
    expect(await countOf(handle.db, 'after-refusal')).toEqual({ count: 1 });
  });

  it('writes nothing once closed', async () => {
    const other = openDatabase({ databaseUrl: undefined, dataDir: tempDir() });
    await migrateToLatest(other.db);
    await other.bulk.insertInto('rate_limits').values(window('before-close', 1)).execute();
    await other.close();
    await expect(
      other.bulk.insertInto('rate_limits').values(window('after-close', 1)).execute(),
    ).rejects.toThrow();
  });
});
