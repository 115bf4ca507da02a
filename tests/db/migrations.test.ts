import fs from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { migrateToLatest, migrateUpTo, openDatabase } from '../../db/connection.js';
import { databaseAdapter, oauthStoreKey } from '../../src/oauth/adapter.js';
import { freshDatabases } from '../helpers/database.js';
import { tempDir } from '../helpers/gateway.js';
import { TEST_DATABASE_URL } from '../helpers/postgres.js';

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

const openFor = freshDatabases();

const now = new Date().toISOString();
const user = (id: string, email: string) => ({
  id,
  email,
  role: 'patient' as const,
  fhir_resource_id: null,
  access_code_hash: null,
  access_code_expires_at: null,
  is_registered: 0 as const,
  password_hash: null,
  created_by_admin: 1 as const,
  created_at: now,
  updated_at: now,
  registered_at: null,
  last_login_at: null,
});

describe.each(['sqlite', 'postgres'] as const)('migrations on %s', (dialect) => {
  const skip = dialect === 'postgres' && !TEST_DATABASE_URL;

  it.skipIf(skip)('migrates up from empty, twice without error, and creates every table', async () => {
    const { db } = await openFor(dialect);
    const first = await migrateToLatest(db);
    expect(first.results?.every((r) => r.status === 'Success')).toBe(true);
    const second = await migrateToLatest(db);
    expect(second.results).toEqual([]);
    const tables = (await db.introspection.getTables()).map((t) => t.name);
    expect(tables).toEqual(expect.arrayContaining(['users', 'audit_log']));
  });

  it.skipIf(skip)('refuses a second user with the same normalised email', async () => {
    const { db } = await openFor(dialect);
    await migrateToLatest(db);
    await db.insertInto('users').values(user('u1', 'ann@example.com')).execute();
    await expect(db.insertInto('users').values(user('u2', 'ann@example.com')).execute()).rejects.toThrow();
  });

  it.skipIf(skip)('keeps the audit log append-only', async () => {
    const { db } = await openFor(dialect);
    await migrateToLatest(db);
    await db
      .insertInto('audit_log')
      .values({ id: 'a1', occurred_at: now, action: 'test', outcome: 'success' } as never)
      .execute();
    await expect(db.updateTable('audit_log').set({ action: 'changed' }).execute()).rejects.toThrow(
      /append-only/,
    );
    await expect(db.deleteFrom('audit_log').execute()).rejects.toThrow(/append-only/);
    const count = await sql<{ n: number }>`select count(*) as n from audit_log`.execute(db);
    expect(Number(count.rows[0]?.n)).toBe(1);
  });

  it.skipIf(skip)(
    're-keys the SMART store by hash (0006): a refresh token issued before still redeems, and no row holds it',
    async () => {
      const { db } = await openFor(dialect);
      await migrateUpTo(db, '0005_smart_apps_oauth');
      const token = 'refresh-token-issued-before-the-upgrade';
      const payload = JSON.stringify({ kind: 'RefreshToken', jti: token, grantId: 'g1' });
      await db
        .insertInto('oauth_store')
        .values({
          model: 'RefreshToken',
          id: token,
          payload,
          grant_id: 'g1',
          uid: null,
          expires_at: null,
          consumed_at: null,
        })
        .execute();
      await migrateToLatest(db);
      const rows = await db.selectFrom('oauth_store').selectAll().execute();
      expect(rows.map((r) => r.id)).toEqual([oauthStoreKey(token)]);
      expect(JSON.stringify(rows)).not.toContain(token);
      const adapter = databaseAdapter(db, { grantRevoked: async () => {} })('RefreshToken');
      expect(await adapter.find(token)).toMatchObject({ jti: token, grantId: 'g1' });
    },
  );
});

describe('the SQLite file', () => {
  it('is readable by its owner alone, with its WAL, also in a DATA_DIR made with a wider mode', async () => {
    const dataDir = tempDir();
    fs.chmodSync(dataDir, 0o755);
    const handle = openDatabase({ databaseUrl: undefined, dataDir });
    cleanups.push(() => handle.close());
    await migrateToLatest(handle.db);
    const file = path.join(dataDir, 'fhir-facade.sqlite');
    for (const name of [file, `${file}-wal`, `${file}-shm`])
      expect((fs.statSync(name).mode & 0o777).toString(8), name).toBe('600');
  });
});

describe.skipIf(!TEST_DATABASE_URL)('a PostgreSQL connection the server closes', () => {
  it('does not take the process down; the next query opens another', async () => {
    const { db } = await openFor('postgres');
    await migrateToLatest(db);
    const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(db);
    const killer = await openFor('postgres');
    await sql`select pg_terminate_backend(${rows[0]?.pid})`.execute(killer.db);
    // the idle client hears the server close it: an 'error' nobody listened to was an uncaught exception
    await new Promise((r) => setTimeout(r, 300));
    const again = await sql<{ one: number }>`select 1 as one`.execute(db);
    expect(again.rows[0]?.one).toBe(1);
  });

  it('inside a transaction fails that transaction alone; the process stays up', async () => {
    const { db } = await openFor('postgres');
    await migrateToLatest(db);
    const killer = await openFor('postgres');
    const transaction = db.transaction().execute(async (trx) => {
      const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx);
      await sql`select pg_terminate_backend(${rows[0]?.pid})`.execute(killer.db);
      // the connection, checked out of the pool, ends between two statements: the pool no longer
      // listens on it, and its 'error' was an uncaught exception
      await new Promise((r) => setTimeout(r, 300));
      await sql`select 1`.execute(trx);
    });
    await expect(transaction).rejects.toThrow();
    const again = await sql<{ one: number }>`select 1 as one`.execute(db);
    expect(again.rows[0]?.one).toBe(1);
  });
});
