import { type Kysely, sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { migrateToLatest, migrateUpTo } from '../../db/connection.js';
import type { Database } from '../../db/schema.js';
import { freshDatabases } from '../helpers/database.js';
import { TEST_DATABASE_URL } from '../helpers/postgres.js';

// 0009 made three indexes partial, under new names: a login's audit row (no target, no patient)
// and its session (no SMART app) no longer write a page of each to the log; the queries that use
// them still do

const open = freshDatabases();
const openFor = async (dialect: 'sqlite' | 'postgres') => (await open(dialect)).db;

const at = (second: number) => new Date(Date.UTC(2026, 11, 6, 12, 0, second)).toISOString();

/** Rows as the gateway writes them: most without a target, a patient or an app. */
async function seed(db: Kysely<Database>) {
  await db
    .insertInto('users')
    .values({
      id: 'u1',
      email: 'ann@example.com',
      role: 'patient',
      created_at: at(0),
      updated_at: at(0),
    } as never)
    .execute();
  const audit = (id: string, second: number, extra: Record<string, string>) => ({
    id,
    occurred_at: at(second),
    action: 'auth.login',
    outcome: 'success',
    ...extra,
  });
  await db
    .insertInto('audit_log')
    .values([
      audit('a1', 1, { actor_user_id: 'u1' }),
      audit('a2', 2, { actor_user_id: 'u1', target_user_id: 'u1' }),
      audit('a3', 3, { actor_user_id: 'u1', patient_id: 'p1' }),
      audit('a4', 4, { actor_user_id: 'u1' }),
    ] as never)
    .execute();
  const session = (id: string, clientId: string | null) => ({
    id,
    user_id: 'u1',
    created_at: at(5),
    expires_at: at(59),
    client_id: clientId,
  });
  await db
    .insertInto('sessions')
    .values([session('s1', null), session('s2', 'app-1'), session('s3', null)] as never)
    .execute();
}

/** The three queries the indexes are for, as adminService.ts and oauth/accounts.ts build them. */
function indexedQueries(db: Kysely<Database>) {
  return {
    audit_log_by_target: db
      .selectFrom('audit_log')
      .selectAll()
      .where('target_user_id', '=', 'u1')
      .orderBy('id', 'desc')
      .limit(51)
      .compile(),
    audit_log_by_patient: db
      .selectFrom('audit_log')
      .selectAll()
      .where('patient_id', '=', 'p1')
      .orderBy('occurred_at', 'desc')
      .orderBy('id', 'desc')
      .limit(51)
      .compile(),
    sessions_by_client: db
      .updateTable('sessions')
      .set({ revoked_at: at(30), revoked_reason: 'app_deactivated' })
      .where('client_id', '=', 'app-1')
      .where('revoked_at', 'is', null)
      .compile(),
  };
}

describe('SQLite: the indexes 0009 made partial', () => {
  it('hold only the rows that have a value, after an upgrade from 0008', async () => {
    const db = await openFor('sqlite');
    await migrateUpTo(db, '0008_code_requests');
    await seed(db);
    await migrateToLatest(db);
    // one leaf page each, so its cells are the index's entries
    const entries = async (index: string) => {
      const { rows } = await sql<{ n: number }>`
        select sum(ncell) as n from dbstat where name = ${index} and pagetype = 'leaf'`.execute(db);
      return Number(rows[0]?.n ?? 0);
    };
    expect(await entries('audit_log_by_target')).toBe(1);
    expect(await entries('audit_log_by_patient')).toBe(1);
    expect(await entries('sessions_by_client')).toBe(1);
    // the indexes kept whole for comparison: every row
    expect(await entries('audit_log_actor')).toBe(4);
    expect(await entries('sessions_user')).toBe(3);
    const { rows: old } = await sql<{ name: string }>`
      select name from sqlite_schema
      where name in ('audit_log_target', 'audit_log_patient', 'sessions_client')`.execute(db);
    expect(old).toEqual([]);
  });

  it('completes on the next start after a start killed halfway through it (SQLite runs it a statement at a time)', async () => {
    const db = await openFor('sqlite');
    await migrateUpTo(db, '0008_code_requests');
    await seed(db);
    // as a kill leaves it: one new index built and one old one dropped, the migration unrecorded
    await sql`create index "audit_log_by_target" on "audit_log" ("target_user_id", "id") where "target_user_id" is not null`.execute(
      db,
    );
    await sql`drop index "audit_log_target"`.execute(db);
    const result = await migrateToLatest(db);
    expect(result.error).toBeUndefined();
    expect(result.results?.map((r) => [r.migrationName, r.status])).toEqual([
      ['0009_login_indexes', 'Success'],
    ]);
  });

  it('are still the ones the admin filters and the app revocation use', async () => {
    const db = await openFor('sqlite');
    await migrateToLatest(db);
    await seed(db);
    for (const [index, query] of Object.entries(indexedQueries(db))) {
      const plan = (
        await db.executeQuery<{ detail: string }>({ ...query, sql: `explain query plan ${query.sql}` })
      ).rows.map((r) => r.detail);
      expect(plan.join('\n'), index).toContain(`USING INDEX ${index} `);
    }
  });

  it('answer those queries as before', async () => {
    const db = await openFor('sqlite');
    await migrateToLatest(db);
    await seed(db);
    const queries = indexedQueries(db);
    expect((await db.executeQuery(queries.audit_log_by_target)).rows).toMatchObject([{ id: 'a2' }]);
    expect((await db.executeQuery(queries.audit_log_by_patient)).rows).toMatchObject([{ id: 'a3' }]);
    expect((await db.executeQuery(queries.sessions_by_client)).numAffectedRows).toBe(1n);
  });
});

describe.skipIf(!TEST_DATABASE_URL)('PostgreSQL: the indexes 0009 made partial', () => {
  it('are partial, and the admin filters and the app revocation still use them', async () => {
    const db = await openFor('postgres');
    await migrateUpTo(db, '0008_code_requests');
    await seed(db);
    await migrateToLatest(db);
    const { rows: definitions } = await sql<{ indexname: string; indexdef: string }>`
      select indexname, indexdef from pg_indexes
      where tablename in ('audit_log', 'sessions') and schemaname = current_schema()`.execute(db);
    const named = (name: string) => definitions.find((d) => d.indexname === name)?.indexdef;
    for (const index of ['audit_log_by_target', 'audit_log_by_patient', 'sessions_by_client'])
      expect(named(index), index).toMatch(/ WHERE \(\w+ IS NOT NULL\)$/);
    // the whole ones dropped
    for (const index of ['audit_log_target', 'audit_log_patient', 'sessions_client'])
      expect(named(index), index).toBeUndefined();
    await db.transaction().execute(async (trx) => {
      // a handful of rows: without this the planner rightly prefers reading the table
      await sql`set local enable_seqscan = off`.execute(trx);
      for (const [index, query] of Object.entries(indexedQueries(trx))) {
        const plan = (
          await trx.executeQuery<{ 'QUERY PLAN': string }>({ ...query, sql: `explain ${query.sql}` })
        ).rows.map((r) => r['QUERY PLAN']);
        expect(plan.join('\n'), index).toContain(index);
      }
    });
  });
});
