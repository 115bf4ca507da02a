import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import { decodeProtectedHeader, SignJWT } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.js';
import { loadTokenKeys, parsePreviousKeys } from '../../src/auth/signingKeys.js';
import { ConfigError } from '../../src/config.js';
import { startTestGateway, type TestGateway, tempDir } from '../helpers/gateway.js';

/**
 * Rotating the signing key logs nobody out (docs/operations.md, "Key rotation"): the new key
 * signs, the old one keeps verifying while it is listed in JWT_PREVIOUS_KEYS, the JWKS lists
 * both, and a retired key's tokens are refused — the key is always the one the token's `kid`
 * names. Each phase is a restart on the same database and DATA_DIR, as in production.
 */

const pem = () =>
  generateKeyPairSync('ec', { namedCurve: 'P-256' })
    .privateKey.export({ format: 'pem', type: 'pkcs8' })
    .toString();

interface Pair {
  token: string;
  refresh_token: string;
}

const kidOf = (token: string) => decodeProtectedHeader(token).kid;

describe('signing-key rotation while a session refreshes', () => {
  const dataDir = tempDir();
  const oldKey = pem();
  const newKey = pem();
  const gateways: TestGateway[] = [];
  const start = async (env: Record<string, string>) => {
    const gw = await startTestGateway({ dataDir, env });
    gateways.push(gw);
    return gw;
  };
  const stop = async (gw: TestGateway) => {
    await gw.close();
    gateways.splice(gateways.indexOf(gw), 1);
  };
  afterAll(async () => {
    for (const gw of gateways) await gw.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  const me = (gw: TestGateway, token: string) => gw.call('/auth/me', { token }).then((r) => r.status);
  const refresh = async (gw: TestGateway, refreshToken: string): Promise<Pair> => {
    const response = await gw.call('/auth/refresh', {
      method: 'POST',
      json: { refresh_token: refreshToken },
    });
    expect(response.status).toBe(200);
    return (await response.json()) as Pair;
  };
  const jwksKids = async (gw: TestGateway, path: string) =>
    ((await (await gw.call(path)).json()) as { keys: Array<{ kid: string; d?: string }> }).keys;

  it('keeps old tokens valid, signs refreshed ones with the new key, lists both keys, and refuses the old key once retired', async () => {
    // before: the old key signs
    const before = await start({ JWT_PRIVATE_KEY: oldKey });
    const user = await before.seedUser({ role: 'patient' });
    const login = await before.call('/auth/login', {
      method: 'POST',
      json: { email: user.email, password: user.password },
    });
    const first = (await login.json()) as Pair;
    const oldKid = before.deps.tokenKeys.signing.kid;
    expect(kidOf(first.token)).toBe(oldKid);
    expect(await me(before, first.token)).toBe(200);
    // what the operator saves before rotating: the public key set
    const savedJwks = await (await before.call('/.well-known/jwks.json')).text();
    await stop(before);

    // rotation: the new key signs, the old one (as the saved JWKS) only verifies
    const during = await start({ JWT_PRIVATE_KEY: newKey, JWT_PREVIOUS_KEYS: savedJwks });
    const newKid = during.deps.tokenKeys.signing.kid;
    expect(newKid).not.toBe(oldKid);
    expect(await me(during, first.token), 'a token of the old key still works').toBe(200);
    const second = await refresh(during, first.refresh_token);
    expect(kidOf(second.token), 'a refresh signs with the new key').toBe(newKid);
    expect(await me(during, second.token)).toBe(200);
    expect(await me(during, first.token), 'and the old token keeps working meanwhile').toBe(200);
    for (const path of ['/.well-known/jwks.json', '/oauth/jwks']) {
      const keys = await jwksKids(during, path);
      expect(
        keys.map((k) => k.kid),
        `${path} lists the signing key first, then the previous one`,
      ).toEqual([newKid, oldKid]);
      expect(keys.every((k) => k.d === undefined)).toBe(true);
    }

    // the key is the one the header names: an old-key signature under the new key's kid is refused
    const [, payload, signature] = first.token.split('.');
    const relabelled = `${Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'at+jwt', kid: newKid })).toString('base64url')}.${payload}.${signature}`;
    expect(await me(during, relabelled)).toBe(401);
    const noKid = await new SignJWT(JSON.parse(Buffer.from(payload!, 'base64url').toString()))
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt' })
      .sign(during.deps.tokenKeys.signing.privateKey);
    expect(await me(during, noKid), 'a token naming no key is refused').toBe(401);

    // the old token was verified (and cached) by this process; an app holding the retired set refuses it
    const retired = await loadTokenKeys(newKey, undefined, dataDir);
    const retiredApp = createApp({ ...during.deps, tokenKeys: retired, signingKey: retired.signing });
    const call = async (token: string) =>
      (await retiredApp.request('/auth/me', { headers: { authorization: `Bearer ${token}` } })).status;
    expect(await call(first.token)).toBe(401);
    expect(await call(second.token)).toBe(200);
    await stop(during);

    // retirement: the old key is removed; its tokens are refused, the new ones and the session go on
    const after = await start({ JWT_PRIVATE_KEY: newKey });
    expect(await me(after, first.token), "a retired key's token is refused").toBe(401);
    expect(await me(after, second.token)).toBe(200);
    const third = await refresh(after, second.refresh_token);
    expect(kidOf(third.token)).toBe(newKid);
    expect((await jwksKids(after, '/.well-known/jwks.json')).map((k) => k.kid)).toEqual([newKid]);
  });
});

describe('JWT_PREVIOUS_KEYS', () => {
  const pair = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });

  it('takes PEM blocks (public or private), a JWK, an array of JWKs or a JWK Set, keeping public halves only', () => {
    const a = pair();
    const b = pair();
    const publicPem = a.publicKey.export({ format: 'pem', type: 'spki' }).toString();
    const privatePem = b.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    const jwkA = a.publicKey.export({ format: 'jwk' });
    const privateJwkB = b.privateKey.export({ format: 'jwk' });
    for (const text of [
      `${publicPem}\n${privatePem}`,
      `${publicPem}${privatePem}`.replace(/\n/g, '\\n'),
      JSON.stringify([jwkA, privateJwkB]),
      JSON.stringify({ keys: [jwkA, privateJwkB] }),
    ]) {
      const keys = parsePreviousKeys(text);
      expect(keys.map((k) => k.type)).toEqual(['public', 'public']);
      expect(keys[0]!.equals(a.publicKey)).toBe(true);
      expect(keys[1]!.equals(b.publicKey)).toBe(true);
    }
    expect(parsePreviousKeys(JSON.stringify(privateJwkB))[0]!.equals(b.publicKey)).toBe(true);
  });

  it('refuses anything that is not an EC P-256 key, naming the variable', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({
      format: 'pem',
      type: 'spki',
    });
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ format: 'jwk' });
    for (const text of ['not a key', '{"kty":"EC"}', String(rsa), JSON.stringify(p384), '[]']) {
      expect(() => parsePreviousKeys(text)).toThrow(ConfigError);
      expect(() => parsePreviousKeys(text)).toThrow(/JWT_PREVIOUS_KEYS/);
    }
  });

  it('ignores a previous key equal to the signing key', async () => {
    const dir = tempDir();
    try {
      const key = pair().privateKey;
      const text = key.export({ format: 'pem', type: 'pkcs8' }).toString();
      const keys = await loadTokenKeys(text, text, dir);
      expect(keys.jwks.keys).toHaveLength(1);
      expect([...keys.byKid.keys()]).toEqual([keys.signing.kid]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
