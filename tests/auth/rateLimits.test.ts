import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../helpers/clock.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';

describe.each(DIALECTS)('rate limits (%s)', (dialect) => {
  let gw: TestGateway;
  let proxied: TestGateway;
  const clock = new ManualClock();

  beforeAll(async () => {
    gw = await startTestGateway({ dialect, clock });
    proxied = await startTestGateway({ dialect, clock, env: { TRUST_PROXY: 'true' } });
  });
  afterAll(async () => {
    await gw.close();
    await proxied.close();
  });

  const login = (
    target: TestGateway,
    email: string,
    password: string,
    headers: Record<string, string> = {},
  ) => target.call('/auth/login', { method: 'POST', json: { email, password }, headers });

  /** The audit entries of one answered request. */
  const auditOf = async (target: TestGateway, response: Response) => {
    await target.deps.auditTrail.flush();
    return target.deps.db
      .selectFrom('audit_log')
      .select(['action', 'outcome', 'error_code', 'actor_user_id', 'actor_role', 'detail'])
      .where('request_id', '=', response.headers.get('x-request-id')!)
      .execute();
  };

  /** The one entry a refused attempt leaves: at the account it named (if any), with the limit reached. */
  const limitedEntry = (action: string, limit: string, account?: { id: string; role: string }) => ({
    action,
    outcome: 'denied',
    error_code: 'rate_limited',
    actor_user_id: account?.id ?? null,
    actor_role: account?.role ?? null,
    detail: JSON.stringify({ limit, status: 429 }),
  });

  it('backs off after 5 failed logins per account with 429 and Retry-After, the same for unknown emails, and recovers after the wait', async () => {
    const user = await gw.seedUser({ role: 'patient' });
    for (const email of [user.email, 'ghost@example.com']) {
      for (let i = 0; i < 5; i++) expect((await login(gw, email, 'wrong password, wrong')).status).toBe(401);
      const limited = await login(gw, email, 'wrong password, wrong');
      expect(limited.status).toBe(429);
      expect(await limited.json()).toMatchObject({ code: 'rate_limited' });
      const retryAfter = Number(limited.headers.get('retry-after'));
      expect(retryAfter).toBeGreaterThan(0);
      expect(retryAfter).toBeLessThanOrEqual(300);
      // audited at the account the request named, so a run at one account reads as one
      const named = email === user.email ? { id: user.id, role: 'patient' } : undefined;
      expect(await auditOf(gw, limited)).toEqual([limitedEntry('auth.login', 'login.account', named)]);
    }
    // even the right password waits: the limit does not tell a right guess from a wrong one
    expect((await login(gw, user.email, user.password)).status).toBe(429);
    clock.advance(301_000);
    expect((await login(gw, user.email, user.password)).status).toBe(200);
  });

  it('holds the per-account limit under 40 parallel guesses', async () => {
    clock.advance(301_000);
    const user = await gw.seedUser({ role: 'patient' });
    const answers = await Promise.all(
      Array.from({ length: 40 }, () => login(gw, user.email, 'parallel wrong guess')),
    );
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(5);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(35);
    clock.advance(301_000);
  });

  it('caps failed logins per client IP across accounts (password spraying)', async () => {
    clock.advance(301_000);
    let last: Response | undefined;
    for (let i = 0; i < 31; i++) last = await login(gw, `spray-${i}@example.com`, 'Winter2026 is here!');
    expect(last?.status).toBe(429);
    // a spray from one address: the IP's limit, at no account
    expect(await auditOf(gw, last!)).toEqual([limitedEntry('auth.login', 'login.ip')]);
    clock.advance(301_000);
  });

  it('gives a successful login its hit back on both counters, the account and the client IP', async () => {
    clock.advance(301_000);
    const user = await proxied.seedUser({ role: 'patient' });
    const ip = { 'x-forwarded-for': '198.51.100.7' };
    // 4 failures, then 30 successes: were the successes counted, the account (5) and the IP (30) would both be over
    for (let i = 0; i < 4; i++)
      expect((await login(proxied, user.email, 'wrong password, wrong', ip)).status).toBe(401);
    for (let i = 0; i < 30; i++)
      expect((await login(proxied, user.email, user.password, ip)).status).toBe(200);
    // one failure left on the account, and the IP still has room for other accounts
    expect((await login(proxied, user.email, 'wrong password, wrong', ip)).status).toBe(401);
    expect((await login(proxied, user.email, 'wrong password, wrong', ip)).status).toBe(429);
    expect((await login(proxied, 'other@example.com', 'wrong password, wrong', ip)).status).toBe(401);
    clock.advance(301_000);
  });

  it('ignores a spoofed X-Forwarded-For when TRUST_PROXY is off', async () => {
    clock.advance(301_000);
    const user = await gw.seedUser({ role: 'patient' });
    for (let i = 0; i < 5; i++) {
      await login(gw, user.email, 'wrong password, wrong', { 'x-forwarded-for': `10.0.0.${i}` });
    }
    const limited = await login(gw, user.email, user.password, { 'x-forwarded-for': '10.9.9.9' });
    expect(limited.status).toBe(429);
    clock.advance(301_000);
  });

  it('keys the per-IP limit on the last X-Forwarded-For hop when TRUST_PROXY is on', async () => {
    clock.advance(301_000);
    for (let i = 0; i < 30; i++)
      await login(proxied, `p-${i}@example.com`, 'nope nope nope', { 'x-forwarded-for': '192.0.2.1' });
    expect(
      (await login(proxied, 'p-x@example.com', 'nope nope nope', { 'x-forwarded-for': '192.0.2.1' })).status,
    ).toBe(429);
    // a client cannot escape by prepending hops: only the last one (written by our proxy) counts
    expect(
      (await login(proxied, 'p-y@example.com', 'nope nope nope', { 'x-forwarded-for': '1.2.3.4, 192.0.2.1' }))
        .status,
    ).toBe(429);
    expect(
      (await login(proxied, 'p-z@example.com', 'nope nope nope', { 'x-forwarded-for': '192.0.2.2' })).status,
    ).toBe(401);
    clock.advance(301_000);
  });

  it('counts an IPv6 client by its /64, so a client cannot take a fresh address for every guess', async () => {
    clock.advance(301_000);
    for (let i = 1; i <= 30; i++)
      await login(proxied, `v6-${i}@example.com`, 'nope nope nope', {
        'x-forwarded-for': `2001:db8:1:2::${i.toString(16)}`,
      });
    const sameBlock = { 'x-forwarded-for': '2001:db8:1:2:ffff:ffff:ffff:ffff' };
    expect((await login(proxied, 'v6-x@example.com', 'nope nope nope', sameBlock)).status).toBe(429);
    const otherBlock = { 'x-forwarded-for': '2001:db8:1:3::1' };
    expect((await login(proxied, 'v6-y@example.com', 'nope nope nope', otherBlock)).status).toBe(401);
    clock.advance(301_000);
  });

  it('limits signup attempts per email (10 per 15 min) and mail requests per email (3 per hour)', async () => {
    clock.advance(3601_000);
    const body = {
      email: 'limited@example.com',
      access_code: 'AAAA-AAAA-AAAA-AAAA',
      password: 'a long and plain passphrase',
    };
    const statuses = [];
    for (let i = 0; i < 11; i++)
      statuses.push((await gw.call('/auth/signup', { method: 'POST', json: body })).status);
    expect(statuses.slice(0, 10).every((s) => s === 400)).toBe(true);
    expect(statuses[10]).toBe(429);

    const mailStatuses = [];
    for (let i = 0; i < 4; i++) {
      mailStatuses.push(
        (await gw.call('/auth/password/forgot', { method: 'POST', json: { email: 'limited@example.com' } }))
          .status,
      );
    }
    expect(mailStatuses).toEqual([202, 202, 202, 429]);
    const resend = await gw.call('/auth/access-code/resend', {
      method: 'POST',
      json: { email: 'limited@example.com' },
    });
    expect(resend.status).toBe(429);
    expect(Number(resend.headers.get('retry-after'))).toBeLessThanOrEqual(3600);
    clock.advance(3601_000);
    expect(
      (await gw.call('/auth/access-code/resend', { method: 'POST', json: { email: 'limited@example.com' } }))
        .status,
    ).toBe(202);
  });
});
