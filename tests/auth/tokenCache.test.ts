import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../helpers/clock.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

/**
 * authenticate keeps tokens whose signature it verified (the hot path's largest cost), so every
 * way a token stops working must still work through that cache: expiry by `exp` and by age
 * (`iat`), logout, deactivation, a password change's token_version — each on the very next
 * request after the token was used (and cached).
 */

describe('the verified-token cache', () => {
  let gw: TestGateway;
  const clock = new ManualClock(new Date());

  beforeAll(async () => {
    gw = await startTestGateway({ clock, env: { ACCESS_TOKEN_TTL: '15m' } });
  });
  afterAll(async () => {
    await gw.close();
  });

  const me = (token: string) => gw.call('/auth/me', { token }).then((r) => r.status);

  it('refuses a cached token once it has expired', async () => {
    const user = await gw.seedUser({ role: 'patient' });
    const token = await gw.login(user.email, user.password);
    expect(await me(token)).toBe(200);
    clock.advance(15 * 60_000 + 61_000); // the lifetime and the tolerated skew
    expect(await me(token)).toBe(401);
  });

  it('refuses a cached token at the next request after logout', async () => {
    const user = await gw.seedUser({ role: 'patient' });
    const token = await gw.login(user.email, user.password);
    expect(await me(token)).toBe(200);
    expect((await gw.call('/auth/logout', { method: 'POST', token })).status).toBe(204);
    expect(await me(token)).toBe(401);
  });

  it('refuses a cached token at the next request after the account is deactivated', async () => {
    const user = await gw.seedUser({ role: 'patient' });
    const token = await gw.login(user.email, user.password);
    expect(await me(token)).toBe(200);
    const admin = await gw.adminToken();
    const patch = await gw.call(`/admin/users/${user.id}`, {
      method: 'PATCH',
      token: admin,
      json: { active: false },
    });
    expect(patch.status).toBe(200);
    expect(await me(token)).toBe(401);
  });

  it('refuses a cached token at the next request after token_version changes (password reset)', async () => {
    const user = await gw.seedUser({ role: 'patient' });
    const token = await gw.login(user.email, user.password);
    expect(await me(token)).toBe(200);
    await gw.deps.db
      .updateTable('users')
      .set((eb) => ({ token_version: eb('token_version', '+', 1) }))
      .where('id', '=', user.id)
      .execute();
    expect(await me(token)).toBe(401);
  });
});
