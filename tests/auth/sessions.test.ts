import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';

interface Pair {
  token: string;
  refresh_token: string;
}

describe.each(DIALECTS)('refresh and logout (%s)', (dialect) => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ dialect });
  });
  afterAll(() => gw.close());

  async function loginPair(): Promise<Pair> {
    const user = await gw.seedUser({ role: 'patient' });
    const response = await gw.call('/auth/login', {
      method: 'POST',
      json: { email: user.email, password: user.password },
    });
    return (await response.json()) as Pair;
  }
  const refresh = (refresh_token: string) =>
    gw.call('/auth/refresh', { method: 'POST', json: { refresh_token } });
  const me = (token: string) => gw.call('/auth/me', { token });

  it('rotates the refresh token on every use', async () => {
    const first = await loginPair();
    const response = await refresh(first.refresh_token);
    expect(response.status).toBe(200);
    const second = (await response.json()) as Pair & { user: { role: string } };
    expect(second.refresh_token).not.toBe(first.refresh_token);
    expect(second.token).not.toBe(first.token);
    expect(second.user.role).toBe('patient');
    expect((await me(second.token)).status).toBe(200);
    const third = await refresh(second.refresh_token);
    expect(third.status).toBe(200);
  });

  it('revokes the whole family when a rotated refresh token is presented again', async () => {
    const first = await loginPair();
    const second = (await (await refresh(first.refresh_token)).json()) as Pair;
    const reuse = await refresh(first.refresh_token);
    expect(reuse.status).toBe(401);
    expect(await reuse.json()).toMatchObject({ code: 'invalid_refresh_token' });
    expect((await refresh(second.refresh_token)).status).toBe(401);
    expect((await me(second.token)).status).toBe(401);
    const audit = await gw.deps.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'auth.refresh_reuse')
      .execute();
    expect(audit.length).toBeGreaterThan(0);
  });

  it('refuses unknown and malformed refresh tokens with 401', async () => {
    expect((await refresh('rt_not-a-real-token')).status).toBe(401);
    expect((await refresh('garbage')).status).toBe(401);
  });

  it('logout makes both the access token and the refresh token fail, and leaves other sessions alone', async () => {
    const user = await gw.seedUser({ role: 'practitioner' });
    const login = async () =>
      (await (
        await gw.call('/auth/login', { method: 'POST', json: { email: user.email, password: user.password } })
      ).json()) as Pair;
    const phone = await login();
    const laptop = await login();
    const response = await gw.call('/auth/logout', { method: 'POST', token: phone.token });
    expect(response.status).toBe(204);
    expect((await me(phone.token)).status).toBe(401);
    expect((await refresh(phone.refresh_token)).status).toBe(401);
    expect((await me(laptop.token)).status).toBe(200);
    expect((await refresh(laptop.refresh_token)).status).toBe(200);
  });

  it('stores refresh tokens only as hashes', async () => {
    const pair = await loginPair();
    const rows = await gw.deps.db.selectFrom('refresh_tokens').selectAll().execute();
    expect(JSON.stringify(rows)).not.toContain(pair.refresh_token);
    expect(JSON.stringify(rows)).not.toContain(pair.refresh_token.slice(3));
  });
});
