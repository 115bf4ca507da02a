import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DatabaseHandle, migrateToLatest, openDatabase } from '../../db/connection.js';
import { precompiled, precompiledInsert, precompiledInsertRows } from '../../db/precompiled.js';
import { createTestSchema, DIALECTS } from '../helpers/postgres.js';
import { tempDir } from '../helpers/tempDir.js';

/**
 * Statements on every login are compiled by Kysely once per dialect and then run with each call's
 * values bound. What must hold: each call's own values reach the database (never the first call's),
 * the builder's constants stay, transactions and the database share one template, a statement on
 * the database never joins another request's open transaction (on SQLite both share one
 * connection), and a builder that would put a value anywhere but a bound parameter is refused
 * instead of run.
 */

const insertWindow = precompiledInsert('rate_limits', ['bucket', 'window_start', 'count']);
// one value used twice, in the values and in the conflict's update
const addTo = precompiled(['bucket', 'start', 'by'], (db, window) =>
  db
    .insertInto('rate_limits')
    .values({ bucket: window.bucket, window_start: window.start, count: window.by })
    .onConflict((oc) =>
      oc
        .columns(['bucket', 'window_start'])
        .doUpdateSet((eb) => ({ count: eb('rate_limits.count', '+', window.by) })),
    )
    .returning('count'),
);
const insertWindows = precompiledInsertRows('rate_limits', ['bucket', 'window_start', 'count']);
// the builder's constant 1000 is a bound parameter too, kept as it is on every call
const countOf = precompiled(['bucket'], (db, window) =>
  db
    .selectFrom('rate_limits')
    .select(['window_start', 'count'])
    .where('bucket', '=', window.bucket)
    .where('count', '<', 1000),
);

describe.each(DIALECTS)('precompiled statements on %s', (dialect) => {
  let handle: DatabaseHandle;
  beforeAll(async () => {
    const url = dialect === 'postgres' ? (await createTestSchema()).url : undefined;
    handle = openDatabase({ databaseUrl: url, dataDir: tempDir() });
    await migrateToLatest(handle.db);
  });
  afterAll(() => handle.close());

  it("binds each call's own values and keeps the builder's constants", async () => {
    await insertWindow(handle.db, { bucket: 'a', window_start: '2026-01-01T00:00:00.000Z', count: 7 });
    await insertWindow(handle.db, { bucket: 'b', window_start: '2026-01-02T00:00:00.000Z', count: 0 });
    await insertWindow(handle.db, { bucket: 'big', window_start: '2026-01-02T00:00:00.000Z', count: 5000 });
    const added = (bucket: string, by: number) =>
      addTo(handle.db, { bucket, start: '2026-01-01T00:00:00.000Z', by });
    expect((await added('a', 3)).rows).toEqual([{ count: 10 }]);
    expect((await added('c', 2)).rows).toEqual([{ count: 2 }]);
    expect((await added('a', 5)).rows).toEqual([{ count: 15 }]);
    expect((await countOf(handle.db, { bucket: 'b' })).rows).toEqual([
      { window_start: '2026-01-02T00:00:00.000Z', count: 0 },
    ]);
    expect((await countOf(handle.db, { bucket: 'big' })).rows).toEqual([]);
    expect((await countOf(handle.db, { bucket: 'nobody' })).rows).toEqual([]);
  });

  it('runs inside a transaction and rolls back with it', async () => {
    await handle.db.transaction().execute(async (trx) => {
      await addTo(trx, { bucket: 'd', start: '2026-01-04T00:00:00.000Z', by: 1 });
      await addTo(trx, { bucket: 'd', start: '2026-01-04T00:00:00.000Z', by: 1 });
    });
    expect((await countOf(handle.db, { bucket: 'd' })).rows).toEqual([
      { window_start: '2026-01-04T00:00:00.000Z', count: 2 },
    ]);
    await expect(
      handle.db.transaction().execute(async (trx) => {
        await addTo(trx, { bucket: 'e', start: '2026-01-05T00:00:00.000Z', by: 1 });
        throw new Error('undone');
      }),
    ).rejects.toThrow('undone');
    expect((await countOf(handle.db, { bucket: 'e' })).rows).toEqual([]);
  });

  it("never reads another request's uncommitted transaction, and counts the rows it changed", async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let written: () => void = () => undefined;
    const wrote = new Promise<void>((resolve) => {
      written = resolve;
    });
    const undone = handle.db.transaction().execute(async (trx) => {
      await addTo(trx, { bucket: 'u', start: '2026-01-06T00:00:00.000Z', by: 1 });
      written();
      await held;
      throw new Error('undone');
    });
    // the read is asked for while the transaction holds its uncommitted row
    await wrote;
    const read = countOf(handle.db, { bucket: 'u' });
    release();
    await expect(undone).rejects.toThrow('undone');
    expect((await read).rows).toEqual([]);
    const bump = precompiled(['bucket'], (db, window) =>
      db.updateTable('rate_limits').set({ count: 1 }).where('bucket', '=', window.bucket),
    );
    await insertWindow(handle.db, { bucket: 'v', window_start: '2026-01-06T00:00:00.000Z', count: 9 });
    expect((await bump(handle.db, { bucket: 'v' })).numAffectedRows).toBe(1n);
    expect((await bump(handle.db, { bucket: 'nobody' })).numAffectedRows).toBe(0n);
  });

  it('inserts many rows per statement, each row its own values, whatever the row count', async () => {
    const row = (bucket: string, count: number) => ({
      bucket,
      window_start: '2026-02-01T00:00:00.000Z',
      count,
    });
    await insertWindows(handle.db, [row('m1', 1), row('m2', 2), row('m3', 3)]);
    await insertWindows(handle.db, [row('m4', 4)]);
    await insertWindows(handle.db, []);
    await insertWindows(handle.db, [row('m5', 5), row('m6', 6), row('m7', 7)]);
    for (const [bucket, count] of [
      ['m1', 1],
      ['m2', 2],
      ['m3', 3],
      ['m4', 4],
      ['m5', 5],
      ['m6', 6],
      ['m7', 7],
    ] as const)
      expect((await countOf(handle.db, { bucket })).rows).toEqual([
        { window_start: '2026-02-01T00:00:00.000Z', count },
      ]);
  });

  it('compiles per call through a handle with plugins, which then see every query', async () => {
    let seen = 0;
    const counting: KyselyPlugin = {
      transformQuery: (args: PluginTransformQueryArgs) => {
        seen++;
        return args.node;
      },
      transformResult: async (args: PluginTransformResultArgs) => args.result,
    };
    const withPlugin = handle.db.withPlugin(counting);
    for (const by of [1, 2, 3])
      await addTo(withPlugin, { bucket: 'p', start: '2026-03-01T00:00:00.000Z', by });
    expect(seen).toBe(3);
    expect((await countOf(handle.db, { bucket: 'p' })).rows).toEqual([
      { window_start: '2026-03-01T00:00:00.000Z', count: 6 },
    ]);
  });

  it('refuses a builder that uses a value outside a bound parameter', async () => {
    const byColumn = precompiled(['column'], (db, chosen) =>
      db.selectFrom('rate_limits').select(chosen.column).where('bucket', '=', 'a'),
    );
    await expect(byColumn(handle.db, { column: 'count' })).rejects.toThrow('may only bind values');
    const unused = precompiled(['bucket', 'start'], (db, window) =>
      db.selectFrom('rate_limits').selectAll().where('bucket', '=', window.bucket),
    );
    await expect(unused(handle.db, { bucket: 'a', start: 'x' })).rejects.toThrow('does not use start');
  });
});
