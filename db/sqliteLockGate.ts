import type SqliteDatabase from 'better-sqlite3';

/**
 * better-sqlite3 waits for another writer's lock on the event loop (`busy_timeout`). A lock held
 * for long by another process (the sqlite3 shell, a backup, VACUUM) made every request that
 * writes wait its full 2 s, one after another, and with them every other request of the process:
 * a review saw /healthz take 20 s and creates go unanswered for 30 s. So once a statement has
 * waited the whole busy timeout in vain, the connection stops waiting (`busy_timeout = 0`: a write
 * that meets the lock fails at once, answered 503) until a probe that takes and drops the write
 * lock without waiting finds it free, every PROBE_EVERY_MS.
 */

const PROBE_EVERY_MS = 200;

export interface LockGate {
  /** Runs one statement; a full wait for a lock that ends in SQLITE_BUSY closes the gate. */
  run<T>(statement: () => T): T;
}

export function lockGate(sqlite: SqliteDatabase.Database, lockWaitMs: number): LockGate {
  let probing: NodeJS.Timeout | undefined;

  const stopProbing = () => {
    clearInterval(probing);
    probing = undefined;
  };

  const reopen = () => {
    // a connection closed meanwhile (the process stopping) has nothing left to wait for
    if (!sqlite.open) return stopProbing();
    // our own transaction is open (Kysely holds the connection across awaits): its statements tell
    if (sqlite.inTransaction) return;
    try {
      sqlite.exec('BEGIN IMMEDIATE');
      sqlite.exec('ROLLBACK');
    } catch {
      return;
    }
    stopProbing();
    sqlite.pragma(`busy_timeout = ${lockWaitMs}`);
  };

  const close = () => {
    if (probing) return;
    sqlite.pragma('busy_timeout = 0');
    probing = setInterval(reopen, PROBE_EVERY_MS);
    probing.unref();
  };

  return {
    run: (statement) => {
      if (probing) return statement();
      const started = performance.now();
      try {
        return statement();
      } catch (error) {
        // only a wait that lasted: SQLITE_BUSY without one (a snapshot gone stale) is ordinary contention
        const waited = performance.now() - started >= lockWaitMs * 0.9;
        if (waited && (error as { code?: unknown }).code === 'SQLITE_BUSY' && sqlite.open) close();
        throw error;
      }
    },
  };
}
