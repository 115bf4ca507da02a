import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { projectFile } from '../paths.js';

/**
 * argon2id parameters: the only place they live. OWASP's minimum is m=19456 KiB, t=2, p=1
 * (https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html); the
 * library's own defaults are weaker, so they are always passed explicitly. p stays 1: more
 * lanes spawn threads that compete with request handling.
 */
export const ARGON2_PARAMETERS = Object.freeze({
  algorithm: 2, // Argon2id (the library's const enum value)
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
  outputLen: 32,
});

/** Longest password accepted (characters after NFKC), checked before any hashing. */
export const PASSWORD_MAX_LENGTH = 128;

/** NFKC so the same passphrase typed on different keyboards hashes the same (NIST SP 800-63B 3.1.1.2). */
export function normalizePassword(password: string): string {
  return password.normalize('NFKC');
}

interface Pending {
  resolve: (value: string | boolean) => void;
  reject: (error: Error) => void;
}

export interface PasswordHasher {
  hash(password: string): Promise<string>;
  verify(hash: string, password: string): Promise<boolean>;
  /** Spends the time of one verification on a throwaway hash, for unknown accounts. */
  verifyDummy(password: string): Promise<void>;
  close(): Promise<void>;
}

/** Starts the dedicated hashing thread. */
export async function createPasswordHasher(): Promise<PasswordHasher> {
  const worker = new Worker(projectFile('src/auth/passwordWorker.mjs'), {
    workerData: { options: ARGON2_PARAMETERS },
  });
  worker.unref();
  const pending = new Map<number, Pending>();
  let nextId = 0;
  let closed = false;

  worker.on('message', (message: { id: number; result?: string | boolean; error?: string }) => {
    const entry = pending.get(message.id);
    if (!entry) return;
    pending.delete(message.id);
    if (message.error !== undefined) entry.reject(new Error(message.error));
    else entry.resolve(message.result as string | boolean);
  });
  worker.on('error', (error) => {
    for (const entry of pending.values()) entry.reject(error);
    pending.clear();
  });

  const run = (op: 'hash' | 'verify', password: string, hash?: string) =>
    new Promise<string | boolean>((resolve, reject) => {
      if (closed) return reject(new Error('password hasher is closed'));
      const id = nextId++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ id, op, password: normalizePassword(password), hash });
    });

  const hash = async (password: string) => (await run('hash', password)) as string;
  const verify = async (stored: string, password: string) => {
    try {
      return (await run('verify', password, stored)) as boolean;
    } catch {
      return false;
    }
  };
  const dummyHash = await hash(randomBytes(24).toString('base64url'));

  return {
    hash,
    verify,
    verifyDummy: async (password) => {
      await verify(dummyHash, password);
    },
    close: async () => {
      closed = true;
      await worker.terminate();
    },
  };
}
