import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BASE64URL_PREFIX } from './config.js';

/**
 * Keys that must never live in the database, so a database dump reveals no usable code:
 * the HMAC key for access codes, the key sealing secrets in the outbox, the keys signing
 * paging cursors and the ids in refresh tokens. All are derived (HKDF-SHA-256, RFC 5869) from
 * one master secret: APP_SECRET, or 32 random bytes generated once into DATA_DIR/app-secret
 * (mode 0600).
 *
 * Rotation without voiding anything in flight: with APP_SECRET_PREVIOUS set, each key is a ring
 * — the key of the current secret makes every new code hash, seal and cursor, and the key of the
 * previous secret still checks and opens what was made before (docs/operations.md, "Key rotation").
 */
export interface Secrets {
  readonly codeHmacKey: KeyRing;
  readonly sealingKey: KeyRing;
  readonly cursorKey: KeyRing;
  /** Signs the ids in a refresh token (src/auth/refreshTokens.ts). */
  readonly refreshTokenKey: KeyRing;
}

/** A key and the one it replaced: `current` makes, every key of `all` (current first) checks and opens. */
export interface KeyRing {
  readonly current: Buffer;
  readonly all: readonly Buffer[];
}

/** A single key (tests, tools) or a ring. */
export type SecretKey = Buffer | KeyRing;

/** The key that makes new hashes, seals and signatures. */
export function currentKey(key: SecretKey): Buffer {
  return Buffer.isBuffer(key) ? key : key.current;
}

/** Every key that checks or opens, the current one first. */
export function everyKey(key: SecretKey): readonly Buffer[] {
  return Buffer.isBuffer(key) ? [key] : key.all;
}

const SECRET_FILE = 'app-secret';

function readOrCreateMaster(dataDir: string): Buffer {
  const file = path.join(dataDir, SECRET_FILE);
  if (fs.existsSync(file)) return Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'base64url');
  const secret = randomBytes(32);
  fs.mkdirSync(dataDir, { recursive: true });
  fs.writeFileSync(file, secret.toString('base64url'), { mode: 0o600, flag: 'wx' });
  return secret;
}

/**
 * A configured master secret: its text, or — after `base64url:` — the bytes it encodes, the form
 * DATA_DIR/app-secret keeps them in (so a generated secret can be moved into the environment, or
 * named as the previous one, unchanged).
 */
function masterOf(configured: string): Buffer {
  return configured.startsWith(BASE64URL_PREFIX)
    ? Buffer.from(configured.slice(BASE64URL_PREFIX.length), 'base64url')
    : Buffer.from(configured, 'utf8');
}

const derive = (master: Buffer, label: string) =>
  Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), `fhir-facade ${label} v1`, 32));

/** The keys of APP_SECRET (else the generated one), each with the key of APP_SECRET_PREVIOUS after it. */
export function loadSecrets(
  configured: string | undefined,
  previous: string | undefined,
  dataDir: string,
): Secrets {
  const master = configured ? masterOf(configured) : readOrCreateMaster(dataDir);
  const masters = [master];
  if (previous && !masterOf(previous).equals(master)) masters.push(masterOf(previous));
  const ring = (label: string): KeyRing => {
    const all = Object.freeze(masters.map((m) => derive(m, label)));
    return Object.freeze({ current: all[0] as Buffer, all });
  };
  return Object.freeze({
    codeHmacKey: ring('access-code-hmac'),
    sealingKey: ring('outbox-sealing'),
    cursorKey: ring('cursor-signing'),
    refreshTokenKey: ring('refresh-token-signing'),
  });
}

const IV_BYTES = 12;
/** GCM's whole tag: a shorter one would still verify (Node before 26 takes any length it is given). */
const TAG_BYTES = 16;
// GCM IVs are taken from a pool the CSPRNG fills 85 at a time: randomBytes(12) costs ~4.6 µs a
// call, and a paging cursor is sealed for every page of every search (docs/performance.md)
const ivPool = Buffer.alloc(IV_BYTES * 85);
let ivOffset = ivPool.length;

/** 96 fresh random bits: an IV is never used twice under one key (random IVs, NIST SP 800-38D 8.2.2). */
function randomIv(): Buffer {
  if (ivOffset + IV_BYTES > ivPool.length) {
    randomFillSync(ivPool);
    ivOffset = 0;
  }
  // a copy: the pool is refilled in place
  const iv = Buffer.from(ivPool.subarray(ivOffset, ivOffset + IV_BYTES));
  ivOffset += IV_BYTES;
  return iv;
}

/** AES-256-GCM under the current key: `v1.<iv>.<tag>.<ciphertext>` in base64url. */
export function seal(key: SecretKey, plaintext: string | Buffer): string {
  const iv = randomIv();
  const cipher = createCipheriv('aes-256-gcm', currentKey(key), iv);
  const ciphertext = Buffer.concat([
    typeof plaintext === 'string' ? cipher.update(plaintext, 'utf8') : cipher.update(plaintext),
    cipher.final(),
  ]);
  return ['v1', iv, cipher.getAuthTag(), ciphertext]
    .map((p) => (typeof p === 'string' ? p : p.toString('base64url')))
    .join('.');
}

/**
 * The bytes of one base64url part, only in its one canonical spelling: a last character may carry
 * unused bits, so several strings decode to the same bytes, and a changed sealed value (a cursor
 * in a URL) must never be accepted as the original.
 */
function canonicalBytes(part: string): Buffer {
  const bytes = Buffer.from(part, 'base64url');
  if (bytes.toString('base64url') !== part) throw new Error('not a sealed value');
  return bytes;
}

/** Opens a sealed value with whichever key of the ring sealed it (GCM's tag tells a wrong key at once). */
export function unseal(key: SecretKey, sealed: string): string {
  return unsealBytes(key, sealed).toString('utf8');
}

/** unseal, its plaintext as the bytes that were sealed. */
export function unsealBytes(key: SecretKey, sealed: string): Buffer {
  const [version, ivText, tagText, ciphertextText, extra] = sealed.split('.');
  // exactly four parts: anything appended to a sealed value is not part of what was sealed
  if (version !== 'v1' || !ivText || !tagText || ciphertextText === undefined || extra !== undefined)
    throw new Error('not a sealed value');
  const [iv, tag, ciphertext] = [ivText, tagText, ciphertextText].map(canonicalBytes) as [
    Buffer,
    Buffer,
    Buffer,
  ];
  let failure: unknown;
  // a truncated tag makes forging a changed value 2^-32 a try at 4 bytes instead of 2^-128
  if (tag.length !== TAG_BYTES) throw new Error('not a sealed value');
  for (const candidate of everyKey(key)) {
    try {
      const decipher = createDecipheriv('aes-256-gcm', candidate, iv, { authTagLength: TAG_BYTES });
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
    } catch (error) {
      failure = error;
    }
  }
  throw failure;
}
