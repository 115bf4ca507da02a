import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { lockGate } from '../../db/sqliteLockGate.js';
import { waitFor } from '../helpers/processes.js';
import { tempDir } from '../helpers/tempDir.js';

/**
 * The lock gate on two real connections to one SQLite file: after one full wait in vain the
 * gated connection stops waiting, and waits again once the other writer is gone.
 */

const WAIT_MS = 100;
const open: SqliteDatabase.Database[] = [];
afterEach(() => {
  for (const db of open.splice(0)) db.close();
});

function connections() {
  const file = path.join(tempDir(), 'gate.sqlite');
  const gated = new SqliteDatabase(file);
  gated.pragma('journal_mode = WAL');
  gated.pragma(`busy_timeout = ${WAIT_MS}`);
  gated.exec('create table t (x integer)');
  const other = new SqliteDatabase(file);
  open.push(gated, other);
  const gate = lockGate(gated, WAIT_MS);
  const insert = gated.prepare('insert into t values (1)');
  /** How long one gated write took, and whether it failed. */
  const write = () => {
    const started = performance.now();
    try {
      gate.run(() => insert.run());
      return { ms: performance.now() - started, ok: true };
    } catch {
      return { ms: performance.now() - started, ok: false };
    }
  };
  return { gated, other, write };
}

describe('lockGate', () => {
  it('waits once for a lock held long, then fails at once, and waits again after the lock is gone', async () => {
    const { gated, other, write } = connections();
    other.exec('BEGIN IMMEDIATE');
    const first = write();
    expect(first).toMatchObject({ ok: false });
    expect(first.ms).toBeGreaterThanOrEqual(WAIT_MS * 0.9);
    const second = write();
    expect(second.ok).toBe(false);
    expect(second.ms).toBeLessThan(WAIT_MS / 2);
    other.exec('ROLLBACK');
    await waitFor('the gate to open', async () => gated.pragma('busy_timeout', { simple: true }) === WAIT_MS);
    expect(write().ok).toBe(true);
  });

  it('stays open for a SQLITE_BUSY that came without a wait (a stale snapshot: ordinary contention)', () => {
    const { gated } = connections();
    const gate = lockGate(gated, WAIT_MS);
    const busy = Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
    expect(() =>
      gate.run(() => {
        throw busy;
      }),
    ).toThrow(busy);
    expect(gated.pragma('busy_timeout', { simple: true })).toBe(WAIT_MS);
  });
});
