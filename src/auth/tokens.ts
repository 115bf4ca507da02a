import {
  createPrivateKey,
  createPublicKey,
  sign as cryptoSign,
  generateKeyPairSync,
  type KeyObject,
} from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  type CompactJWSHeaderParameters,
  calculateJwkThumbprint,
  type JWK,
  errors as joseErrors,
  jwtVerify,
} from 'jose';
import type { Role } from '../../db/schema.js';
import { type Config, ConfigError } from '../config.js';
import { uuidv7 } from '../ids.js';
import { fhirReferenceOf } from '../users/fhirIdentity.js';

/**
 * Access tokens (DESIGN.md section 4): ES256 JWTs with `typ: at+jwt` (RFC 9068), signed with
 * the current asymmetric key and verified by the key their `kid` names — the current one or a
 * previous one kept through a rotation (signingKeys.ts); every public half is served as JWKS.
 */

export const TOKEN_ALGORITHM = 'ES256';
export const TOKEN_TYPE = 'at+jwt';
/** Clock skew tolerated on exp/iat/nbf, in seconds. */
export const CLOCK_SKEW_SECONDS = 60;
const KEY_FILE = 'jwt-signing-key.json';

export interface AccessTokenClaims {
  sub: string;
  role: Role;
  fhir_id: string | null;
  fhirUser: string | null;
  scope: string;
  /** The user's token_version when issued: bumping it revokes every token at once. */
  ver: number;
  /** The session (login/signup) the token belongs to: logout revokes it. */
  sid: string;
  jti: string;
  iat: number;
  exp: number;
  iss: string;
  aud: string;
}

export interface TokenSubject {
  id: string;
  role: Role;
  fhir_resource_id: string | null;
  token_version: number;
}

export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly kid: string;
  readonly publicJwk: JWK;
}

/**
 * The keys that verify tokens, picked by the token header's `kid` (never by trying every key):
 * the signing key and the previous ones still verifying after a rotation (signingKeys.ts).
 * Throws a jose error (a refusal, `invalid`) when the header names no key of the set.
 */
export interface VerificationKeys {
  readonly keyFor: (header: CompactJWSHeaderParameters) => KeyObject;
}

/** SMART on FHIR v2 scopes per role (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html). */
export const SCOPES_BY_ROLE: Readonly<Record<Role, string>> = {
  patient: 'patient/*.rs',
  practitioner: 'user/*.crus',
  admin: 'user/*.cruds',
};

const PRIVATE_KEY_FORMAT = 'must be an EC P-256 private key (ES256): a PKCS#8 or SEC1 PEM, or a private JWK';

function parseConfiguredKey(text: string): KeyObject {
  const trimmed = text.trim();
  try {
    if (trimmed.startsWith('{'))
      return createPrivateKey({ key: JSON.parse(trimmed) as JWK, format: 'jwk' } as never);
    // a PEM given in one line of an environment file carries `\n` escapes
    return createPrivateKey(trimmed.replace(/\\n/g, '\n'));
  } catch {
    // the parser's own message may quote the key: only the variable and the expected form are told
    throw new ConfigError('JWT_PRIVATE_KEY', PRIVATE_KEY_FORMAT);
  }
}

function readOrCreateKeyFile(dataDir: string): KeyObject {
  const file = path.join(dataDir, KEY_FILE);
  if (fs.existsSync(file)) {
    return createPrivateKey({ key: JSON.parse(fs.readFileSync(file, 'utf8')), format: 'jwk' });
  }
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  fs.mkdirSync(dataDir, { recursive: true });
  // 0600 and exclusive create: the private key is readable by this user only, and never overwritten
  fs.writeFileSync(file, JSON.stringify(privateKey.export({ format: 'jwk' })), { mode: 0o600, flag: 'wx' });
  return privateKey;
}

/** The configured key (JWT_PRIVATE_KEY, PEM or JWK), else one generated once and kept in DATA_DIR. */
export async function loadSigningKey(configured: string | undefined, dataDir: string): Promise<SigningKey> {
  const privateKey = configured ? parseConfiguredKey(configured) : readOrCreateKeyFile(dataDir);
  if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new ConfigError('JWT_PRIVATE_KEY', PRIVATE_KEY_FORMAT);
  }
  const publicKey = createPublicKey(privateKey);
  const jwk = publicKey.export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(jwk);
  return { privateKey, publicKey, kid, publicJwk: { ...jwk, kid, alg: TOKEN_ALGORITHM, use: 'sig' } };
}

export interface TokenSettings {
  readonly issuer: string;
  readonly audience: string;
  readonly ttlSeconds: number;
}

/** The token settings of the configuration (issuer, audience, access-token lifetime). */
export function tokenSettingsOf(jwt: Config['jwt']): TokenSettings {
  return { issuer: jwt.issuer, audience: jwt.audience, ttlSeconds: jwt.accessTokenTtlSeconds };
}

export interface IssuedToken {
  readonly token: string;
  readonly claims: AccessTokenClaims;
}

/** Signs an access token for a user. */
export async function issueAccessToken(
  key: SigningKey,
  settings: TokenSettings,
  user: TokenSubject,
  sessionId: string,
  now: Date,
): Promise<IssuedToken> {
  const iat = Math.floor(now.getTime() / 1000);
  const claims: AccessTokenClaims = {
    sub: user.id,
    role: user.role,
    fhir_id: user.fhir_resource_id,
    fhirUser: fhirReferenceOf(user),
    scope: SCOPES_BY_ROLE[user.role],
    ver: user.token_version,
    sid: sessionId,
    jti: uuidv7(now.getTime()),
    iat,
    exp: iat + settings.ttlSeconds,
    iss: settings.issuer,
    aud: settings.audience,
  };
  return { token: await signJwt(key, claims), claims };
}

/**
 * A compact JWS (RFC 7515) signed with ES256 by node:crypto directly: the signature format jose
 * verifies (IEEE P1363, r||s), at a fraction of the main-thread cost of WebCrypto's sign, which
 * was the largest share of a login's. jose still verifies every token. The signature is computed
 * on libuv's thread pool (the callback form): ~150 µs of ECDSA per login off the event loop.
 */
function signJwt(key: SigningKey, payload: object, typ: string = TOKEN_TYPE): Promise<string> {
  const header = base64url(JSON.stringify({ alg: TOKEN_ALGORITHM, typ, kid: key.kid }));
  const input = `${header}.${base64url(JSON.stringify(payload))}`;
  return new Promise((resolve, reject) => {
    cryptoSign(
      'sha256',
      Buffer.from(input),
      { key: key.privateKey, dsaEncoding: 'ieee-p1363' },
      (error, signature) => {
        if (error) reject(error);
        else resolve(`${input}.${signature.toString('base64url')}`);
      },
    );
  });
}

function base64url(text: string): string {
  return Buffer.from(text).toString('base64url');
}

/** Why a token was refused: for the audit trail only, never told to the client. */
export type TokenRefusal = 'invalid' | 'expired' | 'not_yet_valid';

export type TokenCheck =
  | { readonly ok: true; readonly claims: AccessTokenClaims }
  | {
      readonly ok: false;
      readonly reason: TokenRefusal;
      /** The token's user, when the signature was good and only its time was wrong (for the audit). */
      readonly subject?: string;
    };

function refusalOf(error: unknown): TokenRefusal | undefined {
  // JWTExpired covers both `exp` and an `iat` older than the lifetime (maxTokenAge)
  if (error instanceof joseErrors.JWTExpired) return 'expired';
  const timeClaim =
    error instanceof joseErrors.JWTClaimValidationFailed && ['nbf', 'iat'].includes(error.claim);
  if (timeClaim && error.reason === 'check_failed') return 'not_yet_valid';
  if (error instanceof joseErrors.JOSEError || error instanceof TypeError || error instanceof SyntaxError)
    return 'invalid';
  return undefined;
}

/**
 * Verifies signature and claims. The algorithm is pinned (no `none`, no HS256 signed with the
 * public key), issuer and audience are pinned, exp/iat/sub/jti are required, skew is bounded
 * (CLOCK_SKEW_SECONDS). A token is refused once it is older than the configured lifetime by its
 * `iat`, whatever its `exp` says (a token minted with a far `exp`, e.g. with a leaked key or
 * under an earlier, longer setting, does not outlive the policy), and while its `iat` or `nbf`
 * lies in the future. The key is the one the header's `kid` names (a retired or unknown kid is
 * `invalid`). The caller answers one generic 401 whatever the reason.
 */
export async function verifyAccessToken(
  keys: VerificationKeys,
  settings: TokenSettings,
  token: string,
  now: Date,
): Promise<TokenCheck> {
  try {
    const { payload } = await jwtVerify(token, keys.keyFor, {
      algorithms: [TOKEN_ALGORITHM],
      issuer: settings.issuer,
      audience: settings.audience,
      typ: TOKEN_TYPE,
      requiredClaims: ['exp', 'iat', 'sub', 'jti'],
      clockTolerance: CLOCK_SKEW_SECONDS,
      // also refuses an `iat` in the future (beyond the skew)
      maxTokenAge: settings.ttlSeconds,
      currentDate: now,
    });
    return isAccessTokenClaims(payload) ? { ok: true, claims: payload } : { ok: false, reason: 'invalid' };
  } catch (error) {
    const reason = refusalOf(error);
    if (!reason) throw error;
    // jose checks the claims only after the signature: the payload of a time refusal is genuine
    const sub = reason === 'invalid' ? undefined : (error as { payload?: { sub?: unknown } }).payload?.sub;
    return typeof sub === 'string' ? { ok: false, reason, subject: sub } : { ok: false, reason };
  }
}

function isAccessTokenClaims(
  payload: Record<string, unknown>,
): payload is AccessTokenClaims & Record<string, unknown> {
  return (
    typeof payload.sub === 'string' &&
    (payload.role === 'admin' || payload.role === 'patient' || payload.role === 'practitioner') &&
    typeof payload.ver === 'number' &&
    typeof payload.sid === 'string' &&
    typeof payload.jti === 'string'
  );
}
