import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sweep } from '../../src/housekeeping.js';
import { ManualClock } from '../helpers/clock.js';
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

  it('revokes the family when a spent refresh token comes back after it expired (a thief rotated it first)', async () => {
    const clock = new ManualClock();
    const timed = await startTestGateway({ dialect, clock });
    try {
      const user = await timed.seedUser({ role: 'patient' });
      const login = await timed.call('/auth/login', {
        method: 'POST',
        json: { email: user.email, password: user.password },
      });
      const stolen = (await login.json()) as Pair;
      const rotate = async (refreshToken: string) =>
        timed.call('/auth/refresh', { method: 'POST', json: { refresh_token: refreshToken } });
      // the thief rotates the stolen token, and keeps rotating within the token's lifetime
      const ttlMs = timed.deps.config.jwt.refreshTokenTtlSeconds * 1000;
      let held = (await (await rotate(stolen.refresh_token)).json()) as Pair;
      clock.advance(ttlMs - 60_000);
      held = (await (await rotate(held.refresh_token)).json()) as Pair;
      clock.advance(120_000);
      // the client's late retry of the old token: spent, and past its own lifetime
      const late = await rotate(stolen.refresh_token);
      expect(late.status).toBe(401);
      expect((await rotate(held.refresh_token)).status).toBe(401);
      expect((await timed.call('/auth/me', { token: held.token })).status).toBe(401);
      await timed.deps.auditTrail.flush();
      const audit = await timed.deps.db
        .selectFrom('audit_log')
        .select('actor_user_id')
        .where('action', '=', 'auth.refresh_reuse')
        .execute();
      expect(audit).toEqual([{ actor_user_id: user.id }]);
    } finally {
      await timed.close();
    }
  });

  // the sweep deletes expired tokens, spent or not: the signed ids still tell a spent one's return
  it('revokes the family when a spent token comes back after the sweep deleted it, and ends nothing for a forged one', async () => {
    const clock = new ManualClock();
    const timed = await startTestGateway({ dialect, clock });
    try {
      const user = await timed.seedUser({ role: 'patient' });
      const login = async () =>
        (await (
          await timed.call('/auth/login', {
            method: 'POST',
            json: { email: user.email, password: user.password },
          })
        ).json()) as Pair;
      const rotate = (refreshToken: string) =>
        timed.call('/auth/refresh', { method: 'POST', json: { refresh_token: refreshToken } });
      const swept = async () => {
        await sweep(timed.deps.db, clock, timed.deps.logger, {
          refreshTokenTtlSeconds: timed.deps.config.jwt.refreshTokenTtlSeconds,
        });
      };
      const stolen = await login();
      // rotated in the same millisecond it was made: the next token's id still sorts after it
      const ttlMs = timed.deps.config.jwt.refreshTokenTtlSeconds * 1000;
      let held = (await (await rotate(stolen.refresh_token)).json()) as Pair;
      clock.advance(ttlMs - 60_000);
      held = (await (await rotate(held.refresh_token)).json()) as Pair;
      clock.advance(120_000);
      await swept();
      const rows = await timed.deps.db.selectFrom('refresh_tokens').select('id').execute();
      expect(rows).toHaveLength(1); // only the thief's current token is left

      // the spent token's ids under a forged HMAC (a session id is in every access token) end nothing
      const macAt = stolen.refresh_token.length - 5;
      const forged = `${stolen.refresh_token.slice(0, macAt)}${stolen.refresh_token[macAt] === 'A' ? 'B' : 'A'}${stolen.refresh_token.slice(macAt + 1)}`;
      expect((await rotate(forged)).status).toBe(401);
      expect((await timed.call('/auth/me', { token: held.token })).status).toBe(200);

      const late = await rotate(stolen.refresh_token);
      expect(late.status).toBe(401);
      expect(await late.json()).toMatchObject({ code: 'invalid_refresh_token' });
      expect((await rotate(held.refresh_token)).status).toBe(401);
      expect((await timed.call('/auth/me', { token: held.token })).status).toBe(401);
      await timed.deps.auditTrail.flush();
      const reuse = await timed.deps.db
        .selectFrom('audit_log')
        .select('actor_user_id')
        .where('action', '=', 'auth.refresh_reuse')
        .execute();
      expect(reuse).toEqual([{ actor_user_id: user.id }]);

      // a session's last token, swept once expired, is refused as expired and revokes nothing
      const idle = await login();
      clock.advance(ttlMs + 60_000);
      await swept();
      const response = await rotate(idle.refresh_token);
      expect(response.status).toBe(401);
      await timed.deps.auditTrail.flush();
      const refused = await timed.deps.db
        .selectFrom('audit_log')
        .select('detail')
        .where('request_id', '=', response.headers.get('x-request-id')!)
        .executeTakeFirst();
      expect(refused?.detail).toBe(JSON.stringify({ reason: 'expired' }));
      const revoked = await timed.deps.db
        .selectFrom('sessions')
        .select('revoked_reason')
        .where('revoked_at', 'is not', null)
        .execute();
      expect(revoked).toEqual([{ revoked_reason: 'refresh_token_reuse' }]);
    } finally {
      await timed.close();
    }
  });

  // tokens issued before the ids were signed (`rt_` + 43 characters) are known by their row alone
  it('still rotates a refresh token of the earlier format', async () => {
    const first = await loginPair();
    const row = await gw.deps.db
      .selectFrom('refresh_tokens')
      .select(['id', 'session_id'])
      .where('token_hash', '=', createHash('sha256').update(first.refresh_token).digest('hex'))
      .executeTakeFirstOrThrow();
    const earlier = `rt_${randomBytes(32).toString('base64url')}`;
    await gw.deps.db
      .updateTable('refresh_tokens')
      .set({ token_hash: createHash('sha256').update(earlier).digest('hex') })
      .where('id', '=', row.id)
      .execute();
    const rotated = await refresh(earlier);
    expect(rotated.status).toBe(200);
    expect(((await rotated.json()) as Pair).refresh_token).toMatch(/^rt_[A-Za-z0-9_-]{107}$/);
    expect((await refresh(earlier)).status).toBe(401); // spent: reuse, as before
  });

  it('refuses unknown and malformed refresh tokens with 401', async () => {
    expect((await refresh('rt_not-a-real-token')).status).toBe(401);
    expect((await refresh('garbage')).status).toBe(401);
  });

  it('audits each refused refresh with its reason, at the account of a genuine token', async () => {
    const clock = new ManualClock();
    const timed = await startTestGateway({ dialect, clock });
    try {
      const signIn = async () => {
        const user = await timed.seedUser({ role: 'patient' });
        const response = await timed.call('/auth/login', {
          method: 'POST',
          json: { email: user.email, password: user.password },
        });
        return { user, pair: (await response.json()) as Pair };
      };
      const refusalOf = async (refreshToken: string) => {
        const response = await timed.call('/auth/refresh', {
          method: 'POST',
          json: { refresh_token: refreshToken },
        });
        expect(response.status).toBe(401);
        expect(await response.json()).toMatchObject({ code: 'invalid_refresh_token' });
        await timed.deps.auditTrail.flush();
        return timed.deps.db
          .selectFrom('audit_log')
          .select(['action', 'outcome', 'error_code', 'actor_user_id', 'detail'])
          .where('request_id', '=', response.headers.get('x-request-id')!)
          .execute();
      };
      const entry = (reason: string, userId: string | null = null) => [
        {
          action: 'auth.refresh',
          outcome: 'denied',
          error_code: 'invalid_refresh_token',
          actor_user_id: userId,
          detail: JSON.stringify({ reason }),
        },
      ];
      expect(await refusalOf('rt_not-a-real-token')).toEqual(entry('invalid'));
      expect(await refusalOf('garbage')).toEqual(entry('invalid'));
      // an account deactivated while its session lives on (the admin route ends sessions; a race may not)
      const inactive = await signIn();
      await timed.deps.db
        .updateTable('users')
        .set({ is_active: 0 })
        .where('id', '=', inactive.user.id)
        .execute();
      expect(await refusalOf(inactive.pair.refresh_token)).toEqual(entry('inactive_user', inactive.user.id));
      const ended = await signIn();
      await timed.call('/auth/logout', { method: 'POST', token: ended.pair.token });
      expect(await refusalOf(ended.pair.refresh_token)).toEqual(entry('revoked_session', ended.user.id));
      const old = await signIn();
      clock.advance((timed.deps.config.jwt.refreshTokenTtlSeconds + 60) * 1000);
      expect(await refusalOf(old.pair.refresh_token)).toEqual(entry('expired', old.user.id));
    } finally {
      await timed.close();
    }
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

  it("ends the bearer token's session too when the refresh token in the body is another session's or ended", async () => {
    const mine = await loginPair();
    const other = await loginPair();
    const out = await gw.call('/auth/logout', {
      method: 'POST',
      token: mine.token,
      json: { refresh_token: other.refresh_token },
    });
    expect(out.status).toBe(204);
    expect((await me(mine.token)).status).toBe(401);
    expect((await me(other.token)).status).toBe(401);
    // a refresh token that ended already: 401 (treat as logged out), and the bearer's session ends all the same
    const third = await loginPair();
    const ended = await gw.call('/auth/logout', {
      method: 'POST',
      token: third.token,
      json: { refresh_token: other.refresh_token },
    });
    expect(ended.status).toBe(401);
    expect((await me(third.token)).status).toBe(401);
    expect((await refresh(third.refresh_token)).status).toBe(401);
  });

  it('logs out with the refresh token once the access token has expired, and refuses an unknown one', async () => {
    const clock = new ManualClock();
    const timed = await startTestGateway({ dialect, clock });
    try {
      const user = await timed.seedUser({ role: 'patient' });
      const pair = (await (
        await timed.call('/auth/login', {
          method: 'POST',
          json: { email: user.email, password: user.password },
        })
      ).json()) as Pair;
      clock.advance((timed.deps.config.jwt.accessTokenTtlSeconds + 120) * 1000);
      // the access token is dead: logout with it alone cannot end the session
      expect((await timed.call('/auth/logout', { method: 'POST', token: pair.token })).status).toBe(401);
      const out = await timed.call('/auth/logout', {
        method: 'POST',
        token: pair.token,
        json: { refresh_token: pair.refresh_token },
      });
      expect(out.status).toBe(204);
      const again = await timed.call('/auth/refresh', {
        method: 'POST',
        json: { refresh_token: pair.refresh_token },
      });
      expect(again.status).toBe(401);
      const unknown = await timed.call('/auth/logout', {
        method: 'POST',
        json: { refresh_token: 'rt_unknown' },
      });
      expect(unknown.status).toBe(401);
      expect(await unknown.json()).toMatchObject({ code: 'invalid_refresh_token' });
      await timed.deps.auditTrail.flush();
      const actions = await timed.deps.db
        .selectFrom('audit_log')
        .select(['action', 'outcome'])
        .where('action', '=', 'auth.logout')
        .execute();
      expect(actions).toEqual(
        expect.arrayContaining([
          { action: 'auth.logout', outcome: 'success' },
          { action: 'auth.logout', outcome: 'denied' },
        ]),
      );
    } finally {
      await timed.close();
    }
  });

  it('refuses a logout body with other fields, and a logout with neither token', async () => {
    const pair = await loginPair();
    const extra = await gw.call('/auth/logout', { method: 'POST', token: pair.token, json: { all: true } });
    expect(extra.status).toBe(400);
    expect((await gw.call('/auth/logout', { method: 'POST' })).status).toBe(401);
    expect((await me(pair.token)).status).toBe(200);
  });

  it('stores refresh tokens only as hashes', async () => {
    const pair = await loginPair();
    const rows = await gw.deps.db.selectFrom('refresh_tokens').selectAll().execute();
    expect(JSON.stringify(rows)).not.toContain(pair.refresh_token);
    expect(JSON.stringify(rows)).not.toContain(pair.refresh_token.slice(3));
  });
});
