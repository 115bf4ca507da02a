import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { DATABASE_UNREACHABLE, migrateToLatest, openDatabase } from '../../db/connection.js';
import type { AuditEvent } from '../../src/audit/auditService.js';
import { type AuditTrail, createAuditTrail, MAX_UNWRITTEN, MAX_WAITING } from '../../src/audit/auditTrail.js';
import { systemClock } from '../../src/clock.js';
import { createLogger } from '../../src/logger.js';
import { tempDir } from '../helpers/gateway.js';
import { heldInserts, settledWithin } from '../helpers/heldWrites.js';
import { createTestSchema, DIALECTS } from '../helpers/postgres.js';

/**
 * The batched trail: `record` never touches the database; rows are written in multi-row
 * inserts about once a second, or as soon as MAX_WAITING wait; a failed write is retried once,
 * then dropped and logged (a count, never the facts); close() writes what is left.
 */

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Makes the next `failures` inserts into audit_log fail (with `code`, e.g. SQLITE_BUSY for a lock). */
function failingInserts(failures: number, code?: string): KyselyPlugin {
  let left = failures;
  return {
    transformQuery: (args: PluginTransformQueryArgs) => {
      if (args.node.kind === 'InsertQueryNode' && left > 0) {
        left--;
        throw Object.assign(new Error('injected write failure'), code ? { code } : {});
      }
      return args.node;
    },
    transformResult: async (args: PluginTransformResultArgs) => args.result,
  };
}

async function setUp(
  dialect: 'sqlite' | 'postgres',
  options: { intervalMs?: number; failures?: number; code?: string; plugin?: KyselyPlugin } = {},
) {
  const schema = dialect === 'postgres' ? await createTestSchema() : undefined;
  const database = openDatabase({ databaseUrl: schema?.url, dataDir: tempDir() });
  await migrateToLatest(database.db);
  const lines: string[] = [];
  const logger = createLogger('info', { write: (line: string) => void lines.push(line) });
  // the connection the gateway gives its trail (on SQLite, the one on a thread of its own)
  const plugin = options.failures ? failingInserts(options.failures, options.code) : options.plugin;
  const db = plugin ? database.bulk.withPlugin(plugin) : database.bulk;
  const trail = createAuditTrail({
    db,
    clock: systemClock,
    logger,
    intervalMs: options.intervalMs ?? 60_000,
  });
  cleanups.push(async () => {
    await trail.close();
    await database.close();
    await schema?.drop();
  });
  const count = async () =>
    Number(
      (
        await database.db
          .selectFrom('audit_log')
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );
  /** Each row's patient, time and detail, in the order of their request ids. */
  const stamps = () =>
    database.db
      .selectFrom('audit_log')
      .select(['patient_id', 'occurred_at', 'detail'])
      .orderBy('request_id')
      .execute();
  return { trail, db: database.db, lines, count, stamps };
}

const event = (i: number): AuditEvent => ({
  action: 'fhir.search',
  outcome: 'success',
  actorUserId: 'user-1',
  actorRole: 'practitioner',
  targetFhirType: 'Observation',
  patientId: `patient-${i}`,
  requestId: `req-${i}`,
  clientIp: '127.0.0.1',
  detail: { route: 'practitioner.patients' },
});

const recordMany = (trail: AuditTrail, n: number, from = 0) => {
  for (let i = from; i < from + n; i++) trail.record(event(i));
};

describe.each(DIALECTS)('audit trail (%s)', (dialect) => {
  it('writes nothing while recording, and everything on flush', async () => {
    const { trail, db, count } = await setUp(dialect);
    recordMany(trail, 3);
    expect(await count()).toBe(0);
    await trail.flush();
    const rows = await db.selectFrom('audit_log').selectAll().orderBy('request_id').execute();
    expect(rows.map((r) => r.patient_id)).toEqual(['patient-0', 'patient-1', 'patient-2']);
    expect(rows[0]).toMatchObject({
      action: 'fhir.search',
      outcome: 'success',
      error_code: null,
      request_id: 'req-0',
    });
  });

  it('stamps every row with its own time and detail, where consecutive rows share them too', async () => {
    const { trail, stamps } = await setUp(dialect);
    const at = new Date('2026-12-07T10:00:00.000Z');
    const later = new Date('2026-12-07T10:00:00.001Z');
    // one request's rows share their time and detail object (one per patient it showed)
    const shared = { route: 'practitioner.patients' };
    trail.record({ ...event(0), detail: shared }, at);
    trail.record({ ...event(1), detail: shared }, at);
    trail.record({ ...event(2), detail: { route: 'patient.observations' } }, at);
    trail.record({ ...event(3), detail: undefined }, later);
    trail.record({ ...event(4), detail: shared }, later);
    await trail.flush();
    const rows = await stamps();
    const practitioners = '{"route":"practitioner.patients"}';
    expect(rows).toEqual([
      { patient_id: 'patient-0', occurred_at: at.toISOString(), detail: practitioners },
      { patient_id: 'patient-1', occurred_at: at.toISOString(), detail: practitioners },
      { patient_id: 'patient-2', occurred_at: at.toISOString(), detail: '{"route":"patient.observations"}' },
      { patient_id: 'patient-3', occurred_at: later.toISOString(), detail: null },
      { patient_id: 'patient-4', occurred_at: later.toISOString(), detail: practitioners },
    ]);
  });

  it('stamps a row with the time and detail it has when it is written, not those of an earlier flush', async () => {
    const { trail, stamps } = await setUp(dialect);
    const at = new Date('2026-12-07T10:00:00.000Z');
    const later = new Date('2026-12-07T10:00:00.005Z');
    const detail = { route: 'a' };
    trail.record({ ...event(0), detail }, at);
    trail.record({ ...event(1), detail }, later);
    // a time that goes back between consecutive rows
    trail.record({ ...event(2), detail }, at);
    await trail.flush();
    detail.route = 'b';
    trail.record({ ...event(3), detail }, at);
    await trail.flush();
    const rows = await stamps();
    expect(rows).toEqual([
      { patient_id: 'patient-0', occurred_at: at.toISOString(), detail: '{"route":"a"}' },
      { patient_id: 'patient-1', occurred_at: later.toISOString(), detail: '{"route":"a"}' },
      { patient_id: 'patient-2', occurred_at: at.toISOString(), detail: '{"route":"a"}' },
      { patient_id: 'patient-3', occurred_at: at.toISOString(), detail: '{"route":"b"}' },
    ]);
  });

  it('drops and counts a row it cannot make (a detail JSON cannot hold), and writes the others', async () => {
    const { trail, db, lines } = await setUp(dialect);
    const shared = { route: 'practitioner.patients' };
    trail.record({ ...event(0), detail: shared });
    // never built by the gateway (a detail holds strings, numbers, booleans): the trail must not jam on it
    trail.record({ ...event(1), detail: { size: 1n } as unknown as AuditEvent['detail'] });
    trail.record({ ...event(2), detail: shared });
    await trail.flush();
    recordMany(trail, 1, 3);
    await trail.flush();
    const rows = await db
      .selectFrom('audit_log')
      .select(['patient_id', 'detail'])
      .orderBy('request_id')
      .execute();
    expect(rows.map((r) => r.patient_id)).toEqual(['patient-0', 'patient-2', 'patient-3']);
    expect(rows[1]?.detail).toBe('{"route":"practitioner.patients"}');
    const dropped = lines
      .map((l) => JSON.parse(l) as { msg: string; rows?: number })
      .find((l) => /could not be made/.test(l.msg));
    expect(dropped).toMatchObject({ rows: 1 });
  });

  it('writes a thousand rows in one flush (chunked below the statement variable limits)', async () => {
    const { trail, count } = await setUp(dialect);
    // the burst passes MAX_WAITING: the flush it starts takes every row recorded before it runs
    recordMany(trail, 1_000);
    await trail.flush();
    expect(await count()).toBe(1_000);
  });

  it('flushes by itself after the interval', async () => {
    const { trail, count } = await setUp(dialect, { intervalMs: 50 });
    recordMany(trail, 2);
    for (let i = 0; i < 40 && (await count()) < 2; i++) await new Promise((r) => setTimeout(r, 25));
    expect(await count()).toBe(2);
  });

  it('flushes as soon as MAX_WAITING rows wait, without waiting for the interval', async () => {
    const { trail, count } = await setUp(dialect);
    recordMany(trail, MAX_WAITING);
    for (let i = 0; i < 40 && (await count()) < MAX_WAITING; i++) await new Promise((r) => setTimeout(r, 25));
    expect(await count()).toBe(MAX_WAITING);
  });

  it('retries a failed write once and logs only the count', async () => {
    const { trail, count, lines } = await setUp(dialect, { failures: 1 });
    recordMany(trail, 3);
    await trail.flush();
    expect(await count()).toBe(0);
    expect(lines.join('')).toContain('"rows":3');
    await trail.flush();
    expect(await count()).toBe(3);
    expect(lines.join('')).not.toMatch(/patient-|req-|practitioner/);
  });

  it('drops rows whose retry failed too, and says how many', async () => {
    // the first insert holds both rows; each is retried alone (two more inserts)
    const { trail, count, lines } = await setUp(dialect, { failures: 3 });
    recordMany(trail, 2);
    await trail.flush();
    await trail.flush();
    expect(await count()).toBe(0);
    const dropped = lines
      .map((l) => JSON.parse(l) as { msg: string; rows?: number })
      .find((l) => /dropped/.test(l.msg));
    expect(dropped).toMatchObject({ rows: 2 });
    recordMany(trail, 1, 10);
    await trail.flush();
    expect(await count()).toBe(1);
  });

  it('drops only the row the database refuses, not the others in its insert (review S1)', async () => {
    const { trail, db, count, lines } = await setUp(dialect);
    // what each database refuses to bind or store: an object (SQLite), a NUL character (PostgreSQL)
    const unstorable = (dialect === 'sqlite' ? { a: 1 } : 'patient-\u0000') as unknown as string;
    recordMany(trail, 5);
    trail.record({ ...event(5), patientId: unstorable });
    recordMany(trail, 5, 6);
    await trail.flush();
    await trail.flush();
    expect(await count()).toBe(10);
    const ids = (await db.selectFrom('audit_log').select('patient_id').execute()).map((r) => r.patient_id);
    expect(ids).not.toContain('patient-5');
    const dropped = lines
      .map((l) => JSON.parse(l) as { msg: string; rows?: number })
      .find((l) => /dropped/.test(l.msg));
    expect(dropped).toMatchObject({ rows: 1 });
  });

  it('keeps rows through a lock held by another writer, however many flushes it lasts', async () => {
    const { trail, count, lines } = await setUp(dialect, { failures: 4, code: 'SQLITE_BUSY' });
    recordMany(trail, 3);
    for (let i = 0; i < 4; i++) await trail.flush();
    expect(await count()).toBe(0);
    // while the lock lasts, passing MAX_WAITING does not start a flush per record
    recordMany(trail, MAX_WAITING, 3);
    await new Promise((r) => setTimeout(r, 50));
    expect(await count()).toBe(0);
    await trail.flush();
    expect(await count()).toBe(MAX_WAITING + 3);
    expect(lines.join('')).not.toContain('dropped');
  });

  it('keeps rows while the database is out of reach (a failover, a restart), however many flushes it lasts', async () => {
    const { trail, count, lines } = await setUp(dialect, { failures: 5, code: DATABASE_UNREACHABLE });
    recordMany(trail, 3);
    for (let i = 0; i < 5; i++) await trail.flush();
    expect(await count()).toBe(0);
    await trail.flush();
    expect(await count()).toBe(3);
    expect(lines.join('')).not.toContain('dropped');
  });

  it('leaves the rest of a flush for the next one once a lock refuses a chunk (no wait per chunk)', async () => {
    const { trail, count, lines } = await setUp(dialect, { failures: 1, code: 'SQLITE_BUSY' });
    recordMany(trail, 150); // three 64-row chunks
    await trail.flush();
    expect(await count()).toBe(0);
    // one refused insert, not three: the chunks after it were not tried against the lock
    expect(lines.filter((line) => line.includes('audit trail write waits for the database'))).toHaveLength(1);
    await trail.flush();
    expect(await count()).toBe(150);
  });

  it('has room while fewer than MAX_UNWRITTEN events wait for a flush, else makes the caller wait for the next one', async () => {
    const writer = heldInserts();
    const { trail, count, lines } = await setUp(dialect, { plugin: writer.plugin });
    // a failed expectation must not leave the trail's close waiting for the held insert
    cleanups.push(async () => writer.release());
    recordMany(trail, MAX_WAITING); // starts a flush, whose insert is held
    await writer.reached;
    recordMany(trail, MAX_UNWRITTEN - 1, MAX_WAITING);
    expect(trail.room()).toBeUndefined();
    recordMany(trail, 1, MAX_WAITING + MAX_UNWRITTEN - 1);
    const room = trail.room();
    expect(room).toBeInstanceOf(Promise);
    // every caller past the mark waits for the same flush
    expect(trail.room()).toBe(room);
    expect(await settledWithin(room as Promise<void>, 50)).toBe(false);
    writer.release();
    await room;
    // the next flush took them: room again, and every row written once it ends
    expect(trail.room()).toBeUndefined();
    await trail.flush();
    expect(await count()).toBe(MAX_WAITING + MAX_UNWRITTEN);
    // the log heard of it, once
    const warnings = lines.filter((line) => line.includes('audit trail behind its writes'));
    expect(warnings.map((line) => JSON.parse(line))).toMatchObject([{ level: 40, flushes: 1 }]);
  });

  it('lets a waiting caller go at the next timed flush while a lock refuses the rows, and drops none', async () => {
    const { trail, count, lines } = await setUp(dialect, {
      intervalMs: 300,
      failures: 1_000,
      code: 'SQLITE_BUSY',
    });
    recordMany(trail, 1);
    await trail.flush();
    // the lock refused it: from now on records wait for the timer, not for a flush of their own
    expect(lines.join('')).toContain('audit trail write waits for the database');
    recordMany(trail, MAX_UNWRITTEN, 1);
    const room = trail.room();
    expect(room).toBeInstanceOf(Promise);
    expect(await settledWithin(room as Promise<void>, 0)).toBe(false);
    expect(await settledWithin(room as Promise<void>, 2_000)).toBe(true);
    expect(trail.room()).toBeUndefined();
    expect(await count()).toBe(0);
    expect(lines.join('')).not.toContain('dropped');
  });

  it('writes what is left on close, and what is recorded after it', async () => {
    const { trail, count } = await setUp(dialect);
    recordMany(trail, 5);
    await trail.close();
    expect(await count()).toBe(5);
    recordMany(trail, 1, 5);
    await trail.flush();
    expect(await count()).toBe(6);
  });
});
