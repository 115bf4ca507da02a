import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';

interface Pair {
  token: string;
  refresh_token: string;
}

/**
 * POST /auth/password/change: a signed-in password change needs the current password, ends every
 * session of the account (as a reset does) and answers a new token pair for this one.
 */
describe.each(DIALECTS)('changing the password while logged in (%s)', (dialect) => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ dialect });
  });
  afterAll(() => gw.close());

  const login = async (email: string, password: string) =>
    gw.call('/auth/login', { method: 'POST', json: { email, password } });
  const change = (token: string, json: unknown) =>
    gw.call('/auth/password/change', { method: 'POST', token, json });
  const me = (token: string) => gw.call('/auth/me', { token });

  it('needs the current password, and keeps everything as it was when it is wrong', async () => {
    const user = await gw.seedUser({ role: 'patient' });
    const pair = (await (await login(user.email, user.password)).json()) as Pair;
    const wrong = await change(pair.token, {
      current_password: 'not the password at all',
      new_password: 'a brand new long passphrase',
    });
    expect(wrong.status).toBe(400);
    expect(await wrong.json()).toMatchObject({
      code: 'validation_failed',
      errors: [{ path: 'current_password', message: 'is not your current password' }],
    });
    expect((await me(pair.token)).status).toBe(200);
    expect((await login(user.email, user.password)).status).toBe(200);
    const weak = await change(pair.token, {
      current_password: user.password,
      new_password: 'password123456789',
    });
    expect(weak.status).toBe(400);
    expect(await weak.json()).toMatchObject({ errors: [{ path: 'new_password' }] });
    await gw.deps.auditTrail.flush();
    const refusals = await gw.deps.db
      .selectFrom('audit_log')
      .select(['outcome', 'error_code'])
      .where('action', '=', 'auth.password_change')
      .where('actor_user_id', '=', user.id)
      .orderBy('id')
      .execute();
    expect(refusals.slice(0, 2)).toEqual([
      { outcome: 'failed', error_code: 'validation_failed' },
      { outcome: 'denied', error_code: 'validation_failed' },
    ]);
    expect((await change(pair.token, { new_password: 'a brand new long passphrase' })).status).toBe(400);
    // the right current password with a new one the policy refuses is no failed login: no lock-out
    for (let i = 0; i < 6; i++)
      expect(
        (await change(pair.token, { current_password: user.password, new_password: 'short' })).status,
      ).toBe(400);
    expect((await login(user.email, user.password)).status).toBe(200);
    expect((await change('', { current_password: user.password, new_password: 'x'.repeat(20) })).status).toBe(
      401,
    );
  });

  it('refuses the current password as the new one (also spelled another way), and ends no session', async () => {
    const user = await gw.seedUser({ role: 'patient', password: 'ﬁne and long passphrase' });
    const pair = (await (await login(user.email, user.password)).json()) as Pair;
    // NFKC: the ligature ﬁ is "fi", the same password (a no-op change would still end every session)
    for (const same of [user.password, 'fine and long passphrase']) {
      const refused = await change(pair.token, { current_password: user.password, new_password: same });
      expect(refused.status).toBe(400);
      expect(await refused.json()).toMatchObject({
        code: 'validation_failed',
        errors: [{ path: 'new_password', message: 'must differ from your current password' }],
      });
    }
    expect((await me(pair.token)).status).toBe(200);
    expect((await login(user.email, user.password)).status).toBe(200);
  });

  it('ends every session, answers a new pair, and the new password is the one that logs in', async () => {
    const user = await gw.seedUser({ role: 'practitioner' });
    const here = (await (await login(user.email, user.password)).json()) as Pair;
    const elsewhere = (await (await login(user.email, user.password)).json()) as Pair;
    const changed = await change(here.token, {
      current_password: user.password,
      new_password: 'a brand new long passphrase',
    });
    expect(changed.status).toBe(200);
    const fresh = (await changed.json()) as Pair & { user: { email: string } };
    expect(fresh.user.email).toBe(user.email);
    for (const old of [here, elsewhere]) {
      expect((await me(old.token)).status).toBe(401);
      const refreshed = await gw.call('/auth/refresh', {
        method: 'POST',
        json: { refresh_token: old.refresh_token },
      });
      expect(refreshed.status).toBe(401);
    }
    expect((await me(fresh.token)).status).toBe(200);
    expect((await login(user.email, user.password)).status).toBe(401);
    expect((await login(user.email, 'a brand new long passphrase')).status).toBe(200);
    await gw.deps.auditTrail.flush();
    const audit = await gw.deps.db
      .selectFrom('audit_log')
      .select(['outcome'])
      .where('action', '=', 'auth.password_change')
      .where('actor_user_id', '=', user.id)
      .execute();
    expect(audit).toEqual([{ outcome: 'success' }]);
  });
});
