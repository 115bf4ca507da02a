import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** PostgreSQL for tests: only when TEST_DATABASE_URL is set (.ci/run sets it). */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL || undefined;

export interface TestSchema {
  readonly url: string;
  drop(): Promise<void>;
}

/** A fresh schema per test file, so files running in parallel never share tables. */
export async function createTestSchema(): Promise<TestSchema> {
  if (!TEST_DATABASE_URL) throw new Error('TEST_DATABASE_URL is not set');
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await admin.connect();
  await admin.query(`create schema ${schema}`);
  await admin.end();
  const url = new URL(TEST_DATABASE_URL);
  url.searchParams.set('options', `-c search_path=${schema}`);
  return {
    url: url.toString(),
    // dropped by tests/helpers/globalSetup.ts once every file is done (see there why not now)
    drop: async () => {},
  };
}

/** The dialects a scenario runs on: always SQLite, PostgreSQL too when configured. */
export const DIALECTS: readonly ('sqlite' | 'postgres')[] = TEST_DATABASE_URL
  ? ['sqlite', 'postgres']
  : ['sqlite'];

if (!TEST_DATABASE_URL) {
  // said once per file that imports this, so a local run shows what it skipped
  console.info('[tests] TEST_DATABASE_URL is unset: PostgreSQL variants are skipped');
}
