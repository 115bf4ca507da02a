/** Rows deleted per statement: ~2 ms on SQLite, whose statements run on the event loop. */
export const CHUNK_ROWS = 500;
/** Statements per call: a backlog (the first sweep after an upgrade) is worked off over several sweeps. */
const MAX_CHUNKS = 200;
/** The pause between two statements, so requests and other writers get the event loop and the lock. */
const PAUSE_MS = 10;

/**
 * Runs `deleteChunk` (a DELETE of at most `limit` rows, answering how many it deleted) until one
 * deletes fewer, MAX_CHUNKS have run or `stopped()`; returns how many rows went. One statement
 * over a large backlog held SQLite's write lock, and the event loop, for seconds.
 */
export async function deleteInChunks(
  deleteChunk: (limit: number) => Promise<number>,
  stopped: () => boolean = () => false,
): Promise<number> {
  let deleted = 0;
  // a shutdown does not wait for a backlog: the next start's sweeps go on with it
  for (let chunk = 0; chunk < MAX_CHUNKS && !stopped(); chunk++) {
    if (chunk > 0) await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
    const rows = await deleteChunk(CHUNK_ROWS);
    deleted += rows;
    if (rows < CHUNK_ROWS) break;
  }
  return deleted;
}
