import { type DatabaseHandle, openDatabase } from '../../db/connection.js';
import { tempDir } from './gateway.js';
import { createTestSchema, type TestSchema } from './postgres.js';

/** A database of its own, not migrated: a fresh SQLite file, or a fresh PostgreSQL schema (TEST_DATABASE_URL). */
export async function openTestDatabase(
  dialect: 'sqlite' | 'postgres',
): Promise<{ handle: DatabaseHandle; close: () => Promise<void> }> {
  let schema: TestSchema | undefined;
  if (dialect === 'postgres') schema = await createTestSchema();
  const handle = openDatabase({ databaseUrl: schema?.url, dataDir: tempDir() });
  return {
    handle,
    close: async () => {
      await handle.close();
      await schema?.drop();
    },
  };
}
