import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { changePassword, login } from '../../src/auth/authService.js';
import type { AppDeps, Caller } from '../../src/http/types.js';
import { findUserById, replacePassword } from '../../src/users/userRepository.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';

/**
 * A password change, reset or deactivation ends every session: also the one a login or a password
 * change was about to begin, proven with the old password while the other committed.
 */

const PASSWORD = 'a long and plain passphrase';
const ctx = { requestId: 'req-in-flight', clientIp: '203.0.113.9' };

describe.each(DIALECTS)('what was in flight when the password changed (%s)', (dialect) => {
  let gw: TestGateway;

  beforeAll(async () => {
    gw = await startTestGateway({ dialect });
  });
  afterAll(() => gw.close());

  /** The gateway's deps, with `meanwhile` run once the password was checked and before the answer commits. */
  function depsWith(meanwhile: () => Promise<void>): AppDeps {
    const passwords = gw.deps.passwords;
    return {
      ...gw.deps,
      passwords: {
        ...passwords,
        verify: async (hash, password) => {
          const ok = await passwords.verify(hash, password);
          await meanwhile();
          return ok;
        },
      },
    };
  }

  /** What a reset committed by someone else does to the account: a new password, the version moved on. */
  async function resetBySomeoneElse(userId: string): Promise<void> {
    const user = await findUserById(gw.deps.db, userId);
    const passwordHash = await gw.deps.passwords.hash('the reset passphrase of the owner');
    await replacePassword(gw.deps.db, {
      id: userId,
      tokenVersion: user!.token_version,
      passwordHash,
      at: new Date().toISOString(),
    });
  }

  const sessionsOf = (userId: string) =>
    gw.deps.db.selectFrom('sessions').select('id').where('user_id', '=', userId).execute();

  it('a login whose password was checked before a reset committed begins no session (401, audited)', async () => {
    const user = await gw.seedUser({ role: 'patient', password: PASSWORD });
    const deps = depsWith(() => resetBySomeoneElse(user.id));
    await expect(login(deps, { email: user.email, password: PASSWORD }, ctx)).rejects.toMatchObject({
      status: 401,
    });
    expect(await sessionsOf(user.id)).toEqual([]);
    const audited = await gw.deps.db
      .selectFrom('audit_log')
      .select(['outcome', 'detail'])
      .where('action', '=', 'auth.login')
      .where('actor_user_id', '=', user.id)
      .execute();
    expect(audited.map((a) => [a.outcome, JSON.stringify(a.detail)])).toEqual([
      ['failed', expect.stringContaining('changed_meanwhile')],
    ]);
  });

  it('a password change proven before a reset committed changes nothing: the reset password stays', async () => {
    const user = await gw.seedUser({ role: 'patient', password: PASSWORD });
    const caller = { userId: user.id, role: 'patient', fhirId: null, claims: {} } as unknown as Caller;
    const deps = depsWith(() => resetBySomeoneElse(user.id));
    await expect(
      changePassword(
        deps,
        caller,
        { current_password: PASSWORD, new_password: 'the attacker passphrase' },
        ctx,
      ),
    ).rejects.toMatchObject({ status: 401 });
    const login = (password: string) =>
      gw.call('/auth/login', { method: 'POST', json: { email: user.email, password } });
    expect((await login('the attacker passphrase')).status).toBe(401);
    expect((await login('the reset passphrase of the owner')).status).toBe(200);
  });
});
