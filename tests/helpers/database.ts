import { afterAll } from 'vitest';
import { type DatabaseHandle, openDatabase } from '../../db/connection.js';
import { tempDir } from './gateway.js';
import { createTestSchema, type TestSchema } from './postgres.js';

/**
 * For one test file: opens databases of their own, not migrated (a fresh SQLite file, or a fresh
 * PostgreSQL schema under TEST_DATABASE_URL), and closes them once the file is done.
 */
export function freshDatabases(): (dialect: 'sqlite' | 'postgres') => Promise<DatabaseHandle> {
  const closers: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const close of closers) await close();
  });
  return async (dialect) => {
    let schema: TestSchema | undefined;
    if (dialect === 'postgres') schema = await createTestSchema();
    const handle = openDatabase({ databaseUrl: schema?.url, dataDir: tempDir() });
    closers.push(async () => {
      await handle.close();
      await schema?.drop();
    });
    return handle;
  };
}
