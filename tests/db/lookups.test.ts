import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DatabaseHandle, migrateToLatest, openDatabase } from '../../db/connection.js';
import { findCaller, insertUser } from '../../src/users/userRepository.js';
import { tempDir } from '../helpers/tempDir.js';

/**
 * The caller check reads on SQLite's lookup connection as rows of values, mapped to columns by
 * position (db/connection.ts LookupConnection): every column must land under its own name, exactly
 * as the same statement through Kysely names it.
 */
describe('the caller check on the lookup connection (SQLite)', () => {
  let handle: DatabaseHandle;
  const at = '2026-12-06T06:00:00.000Z';
  beforeAll(async () => {
    handle = openDatabase({ databaseUrl: undefined, dataDir: tempDir() });
    await migrateToLatest(handle.db);
    await insertUser(handle.db, {
      id: 'user-1',
      email: 'one@example.com',
      role: 'practitioner',
      fhir_resource_id: 'pract-1',
      access_code_hash: null,
      access_code_expires_at: null,
      is_registered: 1,
      password_hash: 'hash',
      created_by_admin: 1,
      is_active: 1,
      token_version: 3,
      created_at: at,
      updated_at: at,
      registered_at: at,
      last_login_at: null,
    });
    await handle.db
      .insertInto('sessions')
      .values([
        { id: 'live', user_id: 'user-1', created_at: at, expires_at: '2027-01-01T00:00:00.000Z' },
        {
          id: 'revoked',
          user_id: 'user-1',
          created_at: at,
          expires_at: '2027-01-01T00:00:00.000Z',
          revoked_at: at,
          revoked_reason: 'logout',
        },
      ])
      .execute();
  });
  afterAll(() => handle.close());

  it.each([
    ['a live session', 'user-1', 'live'],
    ['a revoked session', 'user-1', 'revoked'],
    ['no such session', 'user-1', 'nothing'],
    ['no such account', 'nobody', 'live'],
  ])('with %s, reads what Kysely reads', async (_case, userId, sessionId) => {
    expect(handle.lookups).toBeDefined();
    const throughKysely = await findCaller(handle.db, userId, sessionId);
    const onLookups = await findCaller(handle.db, userId, sessionId, handle.lookups);
    expect(onLookups).toEqual(throughKysely);
  });

  it('names every column of the row', async () => {
    expect(await findCaller(handle.db, 'user-1', 'revoked', handle.lookups)).toEqual({
      id: 'user-1',
      role: 'practitioner',
      fhir_resource_id: 'pract-1',
      is_active: 1,
      is_registered: 1,
      token_version: 3,
      session_user_id: 'user-1',
      session_revoked_at: at,
      session_expires_at: '2027-01-01T00:00:00.000Z',
    });
  });
});
