import { createHmac } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenSettingsOf, verifyAccessToken } from '../../src/auth/tokens.js';
import { updateUser } from '../../src/users/userRepository.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('access token verification', () => {
  let gw: TestGateway;
  let user: { id: string; email: string; password: string };
  let valid: string;

  beforeAll(async () => {
    gw = await startTestGateway();
    user = await gw.seedUser({ role: 'patient', fhirId: 'pat-tok' });
    valid = await gw.login(user.email, user.password);
  });
  afterAll(() => gw.close());

  const me = (token: string) => gw.call('/auth/me', { token });
  const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString());
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: gw.deps.signingKey.kid })
      .sign(gw.deps.signingKey.privateKey);

  it('accepts the token it issued', async () => {
    expect((await me(valid)).status).toBe(200);
  });

  it.each([
    ['bearer', 200],
    ['BEARER', 200],
    ['Basic', 401],
  ])('reads the scheme %s case-insensitively (RFC 9110): %i', async (scheme, status) => {
    const response = await gw.call('/auth/me', { headers: { authorization: `${scheme} ${valid}` } });
    expect(response.status).toBe(status);
  });

  it('challenges a request without credentials with no error code, and a bad token with invalid_token (RFC 6750 3.1)', async () => {
    const none = await gw.call('/auth/me');
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer realm="fhir-facade"');
    const bad = await me(`${valid.slice(0, -4)}AAAA`);
    expect(bad.status).toBe(401);
    expect(bad.headers.get('www-authenticate')).toBe('Bearer realm="fhir-facade", error="invalid_token"');
    // credentials of another scheme are no bearer token either (review S3: they got invalid_token)
    const basic = await gw.call('/auth/me', { headers: { authorization: 'Basic YWRtaW46c2VjcmV0' } });
    expect(basic.status).toBe(401);
    expect(basic.headers.get('www-authenticate')).toBe('Bearer realm="fhir-facade"');
    const empty = await gw.call('/auth/me', { headers: { authorization: 'Bearer not-a-jwt' } });
    expect(empty.headers.get('www-authenticate')).toBe('Bearer realm="fhir-facade", error="invalid_token"');
  });

  it('refuses alg none', async () => {
    const header = b64({ alg: 'none', typ: 'at+jwt' });
    for (const token of [`${header}.${valid.split('.')[1]}.`, `${header}.${valid.split('.')[1]}.x`]) {
      const response = await me(token);
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toMatch(/^Bearer /);
    }
  });

  it('refuses an HS256 token signed with the public key', async () => {
    const publicPem = gw.deps.signingKey.publicKey.export({ format: 'pem', type: 'spki' }).toString();
    const header = b64({ alg: 'HS256', typ: 'at+jwt', kid: gw.deps.signingKey.kid });
    const payload = valid.split('.')[1]!;
    const signature = createHmac('sha256', publicPem).update(`${header}.${payload}`).digest('base64url');
    expect((await me(`${header}.${payload}.${signature}`)).status).toBe(401);
  });

  it('refuses a token whose payload was changed', async () => {
    const [header, , signature] = valid.split('.');
    const forged = b64({ ...claimsOf(valid), role: 'admin' });
    expect((await me(`${header}.${forged}.${signature}`)).status).toBe(401);
  });

  it('refuses expired tokens (beyond the 60 s skew) and tokens without exp', async () => {
    const base = claimsOf(valid);
    const now = Math.floor(Date.now() / 1000);
    const ttl = gw.deps.config.jwt.accessTokenTtlSeconds;
    expect((await me(await sign({ ...base, iat: now - ttl - 61, exp: now - 61 }))).status).toBe(401);
    expect((await me(await sign({ ...base, iat: now - ttl - 30, exp: now - 30 }))).status).toBe(200);
    const { exp: _exp, ...noExp } = base;
    expect((await me(await sign(noExp))).status).toBe(401);
  });

  it('refuses a wrong issuer, a wrong audience, and a token issued in the future', async () => {
    const base = claimsOf(valid);
    expect((await me(await sign({ ...base, iss: 'https://evil.example' }))).status).toBe(401);
    expect((await me(await sign({ ...base, aud: 'another-api' }))).status).toBe(401);
    const future = Math.floor(Date.now() / 1000) + 3600;
    expect((await me(await sign({ ...base, iat: future, exp: future + 900 }))).status).toBe(401);
  });

  describe('token hygiene: the lifetime is counted from iat, and nothing is valid before its time', () => {
    const now = () => Math.floor(Date.now() / 1000);
    const ttl = () => gw.deps.config.jwt.accessTokenTtlSeconds;

    it('refuses a token older than the configured lifetime by iat, even with a far exp', async () => {
      const base = claimsOf(valid);
      const tooOld = now() - ttl() - 60 - 15;
      expect((await me(await sign({ ...base, iat: tooOld, exp: now() + 3600 }))).status).toBe(401);
      const year = 365 * 24 * 3600;
      expect((await me(await sign({ ...base, iat: now() - 2 * year, exp: now() + year }))).status).toBe(401);
    });

    it('accepts a token within its lifetime plus the 60 s skew, whatever exp says beyond it', async () => {
      const base = claimsOf(valid);
      const old = now() - ttl() - 60 + 15;
      expect((await me(await sign({ ...base, iat: old, exp: now() + 3600 }))).status).toBe(200);
    });

    it('refuses a token issued in the future beyond the skew, and accepts one within it', async () => {
      const base = claimsOf(valid);
      const t = now();
      expect((await me(await sign({ ...base, iat: t + 90, exp: t + 90 + ttl() }))).status).toBe(401);
      expect((await me(await sign({ ...base, iat: t + 20, exp: t + 20 + ttl() }))).status).toBe(200);
    });

    it('refuses a token not valid before a time beyond the skew (nbf), and accepts one within it', async () => {
      const base = claimsOf(valid);
      const t = now();
      expect((await me(await sign({ ...base, iat: t, nbf: t + 90, exp: t + ttl() }))).status).toBe(401);
      expect((await me(await sign({ ...base, iat: t, nbf: t + 20, exp: t + ttl() }))).status).toBe(200);
    });

    it('tells the audit why (expired, not yet valid, invalid) and whose genuine token it was', async () => {
      const base = claimsOf(valid);
      const t = now();
      const check = async (claims: Record<string, unknown>) =>
        verifyAccessToken(
          gw.deps.tokenKeys,
          tokenSettingsOf(gw.deps.config.jwt),
          await sign(claims),
          new Date(t * 1000),
        );
      expect(await check({ ...base, iat: t - ttl() - 120, exp: t + 3600 })).toEqual({
        ok: false,
        reason: 'expired',
        subject: user.id,
      });
      expect(await check({ ...base, iat: t + 120, exp: t + 1000 })).toEqual({
        ok: false,
        reason: 'not_yet_valid',
        subject: user.id,
      });
      expect(await check({ ...base, aud: 'another-api' })).toEqual({ ok: false, reason: 'invalid' });
      expect(await check({ ...base, iat: t, exp: t + ttl() })).toMatchObject({ ok: true });
    });

    it('refuses a token without iat', async () => {
      const { iat: _iat, ...noIat } = claimsOf(valid);
      expect((await me(await sign(noIat))).status).toBe(401);
    });
  });

  it('refuses a token with another typ', async () => {
    const token = await new SignJWT(claimsOf(valid))
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: gw.deps.signingKey.kid })
      .sign(gw.deps.signingKey.privateKey);
    expect((await me(token)).status).toBe(401);
  });

  it('never reads a token from the query string', async () => {
    expect((await gw.call(`/auth/me?access_token=${valid}`)).status).toBe(401);
  });

  it("refuses a deactivated user's token on the next request, and a token older than the token_version", async () => {
    const other = await gw.seedUser({ role: 'practitioner' });
    const token = await gw.login(other.email, other.password);
    expect((await me(token)).status).toBe(200);
    await updateUser(gw.deps.db, other.id, { is_active: 0 });
    expect((await me(token)).status).toBe(401);
    await updateUser(gw.deps.db, other.id, { is_active: 1, token_version: 1 });
    expect((await me(token)).status).toBe(401);
    expect((await me(await gw.login(other.email, other.password))).status).toBe(200);
  });

  it('serves the public key as JWKS without any private part', async () => {
    const response = await gw.call('/.well-known/jwks.json');
    const jwks = (await response.json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({
      kty: 'EC',
      crv: 'P-256',
      alg: 'ES256',
      use: 'sig',
      kid: gw.deps.signingKey.kid,
    });
    expect(jwks.keys[0]).not.toHaveProperty('d');
  });

  it('keeps the signing key across a restart on the same DATA_DIR, so sessions survive', async () => {
    const dataDir = gw.dataDir;
    const second = await startTestGateway({ dataDir });
    try {
      expect(second.deps.signingKey.kid).toBe(gw.deps.signingKey.kid);
      expect((await second.call('/auth/me', { token: valid })).status).toBe(200);
    } finally {
      await second.close();
    }
  });
});
