import type { Kysely, SelectQueryBuilder } from 'kysely';
import type { Database } from './schema.js';

/** Rows deleted per statement: 2–6 ms on SQLite (docs/performance.md), whose statements run on the event loop. */
const CHUNK_ROWS = 500;
/** Statements per call: a backlog (the first sweep after an upgrade) is worked off over several sweeps. */
const MAX_CHUNKS = 200;
/** The pause between two statements, so requests and other writers get the event loop and the lock. */
const PAUSE_MS = 10;

/** The tables purged in chunks: each keyed by a text `id`. */
type PurgedTable = 'outbox' | 'sessions' | 'refresh_tokens';

/**
 * Deletes the rows of `table` that `which` selects, CHUNK_ROWS per statement
 * (`DELETE … WHERE id IN (SELECT id … LIMIT n)`, on SQLite and PostgreSQL alike), until a
 * statement deletes fewer, MAX_CHUNKS have run or `stopped()`; returns how many rows went. One
 * statement over a large backlog held SQLite's write lock, and the event loop, for seconds.
 * `which` must let the select seek by an index (tests/db/growingTables.test.ts).
 */
export async function deleteInChunks<T extends PurgedTable>(
  db: Kysely<Database>,
  table: T,
  which: (
    ids: SelectQueryBuilder<Database, T, { id: string }>,
  ) => SelectQueryBuilder<Database, T, { id: string }>,
  stopped: () => boolean = () => false,
): Promise<number> {
  // the three tables alike to Kysely, which cannot resolve `id` of a table still generic
  const untyped = db as unknown as Kysely<Record<string, { id: string }>>;
  const name: string = table;
  const chunk = async () => {
    const ids = which(untyped.selectFrom(name).select('id') as never).limit(CHUNK_ROWS);
    const result = await untyped
      .deleteFrom(name)
      .where('id', 'in', ids as never)
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  };
  let deleted = 0;
  // a shutdown does not wait for a backlog: the next start's sweeps go on with it
  for (let round = 0; round < MAX_CHUNKS && !stopped(); round++) {
    if (round > 0) await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
    const rows = await chunk();
    deleted += rows;
    if (rows < CHUNK_ROWS) break;
  }
  return deleted;
}
