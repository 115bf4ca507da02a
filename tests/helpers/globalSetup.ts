import { execFileSync } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';

/**
 * The serving bundle (dist/) is built once before any file starts a gateway with `npm start`:
 * on a fresh clone several files would otherwise each find it missing and build it at once.
 */
export function setup(): void {
  execFileSync(process.execPath, ['scripts/build.mjs'], {
    cwd: path.resolve(import.meta.dirname, '../..'),
    stdio: 'inherit',
  });
}

/**
 * Test files each get a PostgreSQL schema of their own (tests/helpers/postgres.ts). They are
 * dropped here, once every file has finished: dropping them while other files still introspect
 * the catalog (Kysely's migrator does) can fail those files with "could not open relation".
 */
export async function teardown(): Promise<void> {
  const url = process.env.TEST_DATABASE_URL;
  if (!url) return;
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ nspname: string }>(
      "select nspname from pg_namespace where nspname like 't\\_%'",
    );
    for (const { nspname } of rows) await client.query(`drop schema if exists "${nspname}" cascade`);
  } finally {
    await client.end();
  }
}
