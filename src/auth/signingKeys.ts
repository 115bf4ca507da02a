import { createPublicKey, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, type JWK, errors as joseErrors } from 'jose';
import { ConfigError } from '../config.js';
import { loadSigningKey, type SigningKey, TOKEN_ALGORITHM, type VerificationKeys } from './tokens.js';

/**
 * The key set of the gateway's tokens, so a signing-key rotation logs nobody out: the current key
 * (JWT_PRIVATE_KEY, or the key generated into DATA_DIR) signs every new token; it and the previous
 * keys (JWT_PREVIOUS_KEYS, public halves suffice) verify, each found by the `kid` in the token's
 * header; the JWKS lists them all, so other services verify old and new tokens alike. A key stops
 * verifying when it is removed from JWT_PREVIOUS_KEYS (docs/operations.md, "Key rotation").
 *
 * The set is fixed for the life of a process (and of its AppDeps): changing it is a restart, so
 * nothing that remembers verified tokens (authenticate.ts keeps them per AppDeps) outlives it.
 */
export interface TokenKeys extends VerificationKeys {
  /** Signs every token issued from now on. */
  readonly signing: SigningKey;
  /** Every key that verifies, by kid (its RFC 7638 thumbprint): the signing key and the previous ones. */
  readonly byKid: ReadonlyMap<string, KeyObject>;
  /** The public JWK Set (RFC 7517): the signing key first, then the previous keys. */
  readonly jwks: { readonly keys: readonly JWK[] };
}

const PREVIOUS_KEYS_FORMAT =
  'must be EC P-256 keys: PEM blocks (public or private), a JWK, a JSON array of JWKs or a JWK Set';

function isP256(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

/** The public half of one JWK (public or private): only its public members are read. */
function publicKeyOfJwk(value: unknown): KeyObject {
  const { kty, crv, x, y } = (value ?? {}) as Record<string, unknown>;
  return createPublicKey({ key: { kty, crv, x, y } as JWK, format: 'jwk' } as never);
}

/**
 * JWT_PREVIOUS_KEYS: PEM blocks one after another (SPKI public keys, or PKCS#8 private keys of
 * which only the public half is kept), a JWK, a JSON array of JWKs, or a JWK Set — e.g. the
 * gateway's own `/.well-known/jwks.json` saved before a rotation, or the old key file's JSON.
 */
export function parsePreviousKeys(text: string): KeyObject[] {
  const trimmed = text.trim();
  let keys: KeyObject[];
  try {
    if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
      const parsed: unknown = JSON.parse(trimmed);
      const set = (parsed as { keys?: unknown }).keys;
      const list: unknown[] = Array.isArray(parsed) ? parsed : Array.isArray(set) ? set : [parsed];
      keys = list.map(publicKeyOfJwk);
    } else {
      // a PEM given in one line of an environment file carries `\n` escapes
      const blocks = trimmed
        .replace(/\\n/g, '\n')
        .match(/-----BEGIN [A-Z ]+-----[\s\S]+?-----END [A-Z ]+-----/g);
      keys = (blocks ?? []).map((block) => createPublicKey(block));
    }
  } catch {
    throw new ConfigError('JWT_PREVIOUS_KEYS', PREVIOUS_KEYS_FORMAT);
  }
  if (keys.length === 0 || !keys.every(isP256))
    throw new ConfigError('JWT_PREVIOUS_KEYS', PREVIOUS_KEYS_FORMAT);
  return keys;
}

/** The verifying key a token's header names by `kid`; a token without a known kid is refused. */
function keyResolver(byKid: ReadonlyMap<string, KeyObject>): TokenKeys['keyFor'] {
  return (header) => {
    const key = header.kid === undefined ? undefined : byKid.get(header.kid);
    if (!key) throw new joseErrors.JWKSNoMatchingKey();
    return key;
  };
}

/**
 * The current key (JWT_PRIVATE_KEY, else the one generated once into DATA_DIR) and the previous
 * keys that still verify (JWT_PREVIOUS_KEYS). A previous key equal to the current one is ignored.
 */
export async function loadTokenKeys(
  current: string | undefined,
  previous: string | undefined,
  dataDir: string,
): Promise<TokenKeys> {
  const signing = await loadSigningKey(current, dataDir);
  const byKid = new Map<string, KeyObject>([[signing.kid, signing.publicKey]]);
  const keys: JWK[] = [signing.publicJwk];
  for (const publicKey of previous ? parsePreviousKeys(previous) : []) {
    const jwk = publicKey.export({ format: 'jwk' }) as JWK;
    const kid = await calculateJwkThumbprint(jwk);
    if (byKid.has(kid)) continue;
    byKid.set(kid, publicKey);
    keys.push({ ...jwk, kid, alg: TOKEN_ALGORITHM, use: 'sig' });
  }
  return Object.freeze({
    signing,
    byKid,
    jwks: Object.freeze({ keys: Object.freeze(keys) }),
    keyFor: keyResolver(byKid),
  });
}
