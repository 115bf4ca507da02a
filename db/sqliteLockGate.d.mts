import type SqliteDatabase from 'better-sqlite3';

export interface LockGate {
  /** Runs one statement; a full wait for a lock that ends in SQLITE_BUSY closes the gate. */
  run<T>(statement: () => T): T;
}

/** See sqliteLockGate.mjs: stops waiting for a lock once a wait for it has lasted in vain, until it is free. */
export function lockGate(sqlite: SqliteDatabase.Database, lockWaitMs: number): LockGate;
