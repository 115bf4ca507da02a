import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/**
 * Keys that must never live in the database, so a database dump reveals no usable code:
 * the HMAC key for access codes, the key sealing secrets in the outbox, the key signing
 * paging cursors. All are derived (HKDF-SHA-256, RFC 5869) from one master secret: APP_SECRET,
 * or 32 random bytes generated once into DATA_DIR/app-secret (mode 0600).
 */
export interface Secrets {
  readonly codeHmacKey: Buffer;
  readonly sealingKey: Buffer;
  readonly cursorKey: Buffer;
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

const derive = (master: Buffer, label: string) =>
  Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), `fhir-facade ${label} v1`, 32));

export function loadSecrets(configured: string | undefined, dataDir: string): Secrets {
  const master = configured ? Buffer.from(configured, 'utf8') : readOrCreateMaster(dataDir);
  return {
    codeHmacKey: derive(master, 'access-code-hmac'),
    sealingKey: derive(master, 'outbox-sealing'),
    cursorKey: derive(master, 'cursor-signing'),
  };
}

/** AES-256-GCM: `v1.<iv>.<tag>.<ciphertext>` in base64url. */
export function seal(key: Buffer, plaintext: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return ['v1', iv, cipher.getAuthTag(), ciphertext]
    .map((p) => (typeof p === 'string' ? p : p.toString('base64url')))
    .join('.');
}

export function unseal(key: Buffer, sealed: string): string {
  const [version, iv, tag, ciphertext] = sealed.split('.');
  if (version !== 'v1' || !iv || !tag || ciphertext === undefined) throw new Error('not a sealed value');
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'));
  decipher.setAuthTag(Buffer.from(tag, 'base64url'));
  return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64url')), decipher.final()]).toString(
    'utf8',
  );
}
