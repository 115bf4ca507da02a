import type { CompiledQuery } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { findDueOutboxIds } from '../../src/email/outbox.js';
import { sweep } from '../../src/housekeeping.js';
import { createLogger } from '../../src/logger.js';
import { countActiveSessions, readOutboxBacklog } from '../../src/metrics/collectors.js';
import { recordingSqlite } from '../helpers/recordingSqlite.js';

// The tables that grow with every login and refresh. A statement that runs again and again (a
// lane's poll every 2 s, the sweep every 10 min, the gauge at every scrape) and read one of them
// whole held the event loop for as long as that took: 50-70 ms for the AuditEvent lane's poll
// with 500,000 delivered rows. SQLite's plans for them, on a migrated file.
const GROWING = ['audit_log', 'outbox', 'sessions', 'refresh_tokens'];

const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closers) await close();
});

async function statementsOf(
  run: (db: Awaited<ReturnType<typeof recordingSqlite>>['db']) => Promise<unknown>,
) {
  const recording = await recordingSqlite();
  closers.push(recording.close);
  await run(recording.db);
  const touching = recording.ran.filter((query) => GROWING.some((table) => query.sql.includes(`"${table}"`)));
  return { touching, plan: recording.plan };
}

/** The tables a plan step reads whole (`SCAN x`, `x` a table or its alias in the statement). */
function wholeTableReads(query: CompiledQuery, plan: (query: CompiledQuery) => string): string[] {
  const aliases = new Map([...query.sql.matchAll(/"(\w+)" as "(\w+)"/g)].map((m) => [m[2], m[1]]));
  return plan(query)
    .split(' | ')
    .map((step) => /^SCAN (\w+)/.exec(step)?.[1])
    .map((name) => (name ? (aliases.get(name) ?? name) : undefined))
    .filter((table): table is string => !!table && GROWING.includes(table));
}

function expectNoWholeTableRead(queries: readonly CompiledQuery[], plan: (query: CompiledQuery) => string) {
  for (const query of queries) expect(wholeTableReads(query, plan), query.sql).toEqual([]);
}

describe('statements that run again and again over the tables that grow with the logins (SQLite)', () => {
  it.each([
    { who: 'the AuditEvent lane', lane: 'fhir_audit_event' as const },
    { who: 'a worker of every lane', lane: undefined },
  ])('a poll ($who) seeks to the undelivered rows, not every row ever delivered', async ({ lane }) => {
    const { touching, plan } = await statementsOf((db) =>
      findDueOutboxIds(db, new Date().toISOString(), 50, lane),
    );
    expect(touching).toHaveLength(1);
    expect(plan(touching[0] as CompiledQuery)).toContain('USING INDEX outbox_lane_due (kind=? AND status=?)');
  });

  it('the housekeeping sweep seeks by an index in each of them', async () => {
    const { touching, plan } = await statementsOf((db) =>
      sweep(db, systemClock, createLogger('silent'), { refreshTokenTtlSeconds: 604_800 }),
    );
    // the refresh tokens, the sessions and the delivered outbox rows at least
    expect(touching.length).toBeGreaterThanOrEqual(3);
    expectNoWholeTableRead(touching, plan);
  });

  it('the outbox backlog gauge reads only the rows waiting', async () => {
    const { touching, plan } = await statementsOf((db) => readOutboxBacklog(db));
    expect(touching).toHaveLength(1);
    expect(plan(touching[0] as CompiledQuery)).toContain('USING INDEX outbox_lane_due (kind=? AND status=?)');
  });

  it('the active-sessions gauge reads only the sessions not yet ended', async () => {
    const { touching, plan } = await statementsOf((db) => countActiveSessions(db, new Date()));
    expect(touching).toHaveLength(2);
    expectNoWholeTableRead(touching, plan);
  });
});
