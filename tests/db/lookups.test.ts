import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DatabaseHandle, migrateToLatest, openDatabase } from '../../db/connection.js';
import type { NewUser } from '../../db/schema.js';
import { findCaller, insertUser } from '../../src/users/userRepository.js';
import { tempDir } from '../helpers/tempDir.js';

/**
 * The caller check reads on SQLite's lookup connection as rows of values, mapped to columns by
 * position (db/connection.ts LookupConnection): every column must land under its own name, exactly
 * as the same statement through Kysely names it. The accounts and sessions give every column a
 * value no other column has in the same row, so any two columns read from each other's place fail.
 */
describe('the caller check on the lookup connection (SQLite)', () => {
  let handle: DatabaseHandle;
  const at = '2026-12-06T06:00:00.000Z';
  const ends = '2027-01-01T00:00:00.000Z';
  const account = (id: string, flags: Pick<NewUser, 'is_active' | 'is_registered'>): NewUser => ({
    id,
    email: `${id}@example.com`,
    role: 'practitioner',
    fhir_resource_id: `fhir-${id}`,
    access_code_hash: null,
    access_code_expires_at: null,
    password_hash: 'hash',
    created_by_admin: 1,
    token_version: 3,
    created_at: at,
    updated_at: at,
    registered_at: at,
    last_login_at: null,
    ...flags,
  });
  beforeAll(async () => {
    handle = openDatabase({ databaseUrl: undefined, dataDir: tempDir() });
    await migrateToLatest(handle.db);
    // deactivated (is_active 0, is_registered 1) and pending (is_active 1, is_registered 0): the two flags differ
    await insertUser(handle.db, account('deactivated', { is_active: 0, is_registered: 1 }));
    await insertUser(handle.db, account('pending', { is_active: 1, is_registered: 0 }));
    const session = (id: string, userId: string, revokedAt: string | null) => ({
      id,
      user_id: userId,
      created_at: at,
      expires_at: ends,
      revoked_at: revokedAt,
      revoked_reason: revokedAt ? 'logout' : null,
    });
    await handle.db
      .insertInto('sessions')
      .values([
        session('live', 'deactivated', null),
        session('revoked', 'deactivated', at),
        // another account's session: its user_id is not the caller's id
        session('theirs', 'pending', null),
      ])
      .execute();
  });
  afterAll(() => handle.close());

  it.each([
    ['a live session', 'deactivated', 'live'],
    ['a revoked session', 'deactivated', 'revoked'],
    ["another account's session", 'deactivated', 'theirs'],
    ['a pending account', 'pending', 'theirs'],
    ['no such session', 'pending', 'nothing'],
    ['no such account', 'nobody', 'live'],
  ])('with %s, reads what Kysely reads', async (_case, userId, sessionId) => {
    expect(handle.lookups).toBeDefined();
    const throughKysely = await findCaller(handle.db, userId, sessionId);
    const onLookups = await findCaller(handle.db, userId, sessionId, handle.lookups);
    expect(onLookups).toEqual(throughKysely);
  });

  it('names every column of the row', async () => {
    expect(await findCaller(handle.db, 'deactivated', 'revoked', handle.lookups)).toEqual({
      id: 'deactivated',
      role: 'practitioner',
      fhir_resource_id: 'fhir-deactivated',
      is_active: 0,
      is_registered: 1,
      token_version: 3,
      session_user_id: 'deactivated',
      session_revoked_at: at,
      session_expires_at: ends,
    });
    expect(await findCaller(handle.db, 'pending', 'live', handle.lookups)).toMatchObject({
      id: 'pending',
      is_active: 1,
      is_registered: 0,
      session_user_id: 'deactivated',
      session_revoked_at: null,
    });
  });
});
