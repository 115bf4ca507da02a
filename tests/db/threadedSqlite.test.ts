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

/** A rate_limits row: a table with a primary key and nothing else to satisfy. */
const window = (bucket: string, count: number) => ({
  bucket,
  window_start: '2026-01-01T00:00:00.000Z',
  count,
});

async function migratedDatabase(): Promise<DatabaseHandle> {
  const handle = openDatabase({ databaseUrl: undefined, dataDir: tempDir() });
  await migrateToLatest(handle.db);
  return handle;
}

describe('the bulk SQLite connection on its own thread', () => {
  let handle: DatabaseHandle;
  beforeAll(async () => {
    handle = await migratedDatabase();
  });
  afterAll(() => handle.close());

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
    const other = await migratedDatabase();
    await other.bulk.insertInto('rate_limits').values(window('before-close', 1)).execute();
    await other.close();
    await expect(
      other.bulk.insertInto('rate_limits').values(window('after-close', 1)).execute(),
    ).rejects.toThrow();
  });
});

/**
 * The writes' connection (DatabaseHandle.writes) holds a transaction's statements until its commit
 * and runs them on its thread in one message: what must hold is that such a transaction is still
 * one transaction (all or nothing, nothing seen before the commit), that it refuses what it cannot
 * do (a read, a result asked for before the commit), and that a statement outside one runs alone.
 */
describe('batched transactions on the writes connection', () => {
  let handle: DatabaseHandle;
  beforeAll(async () => {
    handle = await migratedDatabase();
  });
  afterAll(() => handle.close());

  const buckets = async (prefix: string) =>
    (
      await handle.db
        .selectFrom('rate_limits')
        .select('bucket')
        .where('bucket', 'like', `${prefix}%`)
        .orderBy('bucket')
        .execute()
    ).map((row) => row.bucket);

  it('runs the writes at the commit, all of them, and none before', async () => {
    let seenInside: string[] = [];
    await handle.writes.transaction().execute(async (trx) => {
      await trx.executeQuery(trx.insertInto('rate_limits').values(window('batch-1', 1)).compile());
      await trx.executeQuery(
        trx.updateTable('rate_limits').set({ count: 5 }).where('bucket', '=', 'batch-1').compile(),
      );
      await trx.executeQuery(trx.insertInto('rate_limits').values(window('batch-2', 2)).compile());
      seenInside = await buckets('batch-');
    });
    expect(seenInside).toEqual([]);
    expect(await buckets('batch-')).toEqual(['batch-1', 'batch-2']);
    expect(
      await handle.db
        .selectFrom('rate_limits')
        .select('count')
        .where('bucket', '=', 'batch-1')
        .executeTakeFirst(),
    ).toEqual({ count: 5 });
  });

  it('rolls the whole batch back when one statement fails, keeping SQLite code', async () => {
    await handle.db.insertInto('rate_limits').values(window('dup-taken', 1)).execute();
    await expect(
      handle.writes.transaction().execute(async (trx) => {
        await trx.executeQuery(trx.insertInto('rate_limits').values(window('dup-new', 1)).compile());
        await trx.executeQuery(trx.insertInto('rate_limits').values(window('dup-taken', 9)).compile());
      }),
    ).rejects.toMatchObject({ code: expect.stringMatching(/^SQLITE_CONSTRAINT/) });
    expect(await buckets('dup-')).toEqual(['dup-taken']);
    // the connection goes on: the next batch commits
    await handle.writes.transaction().execute(async (trx) => {
      await trx.executeQuery(trx.insertInto('rate_limits').values(window('dup-after', 1)).compile());
    });
    expect(await buckets('dup-')).toEqual(['dup-after', 'dup-taken']);
  });

  it('holds what a controlled transaction runs after a failed commit, until its rollback', async () => {
    await handle.db.insertInto('rate_limits').values(window('ctl-taken', 1)).execute();
    const trx = await handle.writes.startTransaction().execute();
    await trx.executeQuery(trx.insertInto('rate_limits').values(window('ctl-taken', 2)).compile());
    await expect(trx.commit().execute()).rejects.toMatchObject({
      code: expect.stringMatching(/^SQLITE_CONSTRAINT/),
    });
    // sent alone, it would have committed on its own
    await trx.executeQuery(trx.insertInto('rate_limits').values(window('ctl-after', 1)).compile());
    await trx.rollback().execute();
    expect(await buckets('ctl-')).toEqual(['ctl-taken']);
  });

  it('refuses a read or a returning in a batch, and writes none of it', async () => {
    const refusals = [
      (trx: typeof handle.writes) => trx.selectFrom('rate_limits').selectAll().execute(),
      (trx: typeof handle.writes) =>
        trx.insertInto('rate_limits').values(window('refused-ret', 1)).returning('count').execute(),
    ];
    for (const refused of refusals) {
      await expect(
        handle.writes.transaction().execute(async (trx) => {
          await trx.executeQuery(trx.insertInto('rate_limits').values(window('refused-before', 1)).compile());
          await refused(trx as never);
        }),
      ).rejects.toThrow(/may only write/);
    }
    expect(await buckets('refused-')).toEqual([]);
  });

  it('throws when a result is read before the commit (a builder reads it), and writes nothing', async () => {
    await expect(
      handle.writes.transaction().execute(async (trx) => {
        const result = await trx.executeQuery(
          trx.insertInto('rate_limits').values(window('early-read', 1)).compile(),
        );
        return result.numAffectedRows;
      }),
    ).rejects.toThrow(/not known before/);
    await expect(
      handle.writes.transaction().execute(async (trx) => {
        await trx.updateTable('rate_limits').set({ count: 2 }).where('bucket', '=', 'x').executeTakeFirst();
      }),
    ).rejects.toThrow(/not known before/);
    expect(await buckets('early-read')).toEqual([]);
  });

  it('runs a statement outside a transaction alone, with its result', async () => {
    const { rows } = await handle.writes
      .insertInto('rate_limits')
      .values(window('alone', 1))
      .onConflict((oc) => oc.columns(['bucket', 'window_start']).doUpdateSet({ count: 7 }))
      .returning('count')
      .execute()
      .then((r) => ({ rows: r }));
    expect(rows).toEqual([{ count: 1 }]);
    expect(await buckets('alone')).toEqual(['alone']);
  });

  it('waits for a lock off the event loop, then commits the batch', async () => {
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    let committed = false;
    let batch: Promise<unknown> | undefined;
    try {
      await handle.db.transaction().execute(async (trx) => {
        // the request thread's connection holds the write lock for the next 150 ms
        await trx.insertInto('rate_limits').values(window('held-lock', 1)).execute();
        batch = handle.writes
          .transaction()
          .execute(async (w) => {
            await w.executeQuery(w.insertInto('rate_limits').values(window('held-batch', 1)).compile());
          })
          .then(() => {
            committed = true;
          });
        await sleep(150);
        expect(committed).toBe(false);
      });
      await batch;
    } finally {
      clearInterval(ticker);
    }
    expect(committed).toBe(true);
    expect(ticks).toBeGreaterThan(10);
    expect(await buckets('held-')).toEqual(['held-batch', 'held-lock']);
  });
});
