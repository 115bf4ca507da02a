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

/** Longest password accepted, in characters as passwordLength counts them; checked before any hashing. */
export const PASSWORD_MAX_LENGTH = 128;

// NFKC composes at most a few code points into one, each at most two UTF-16 units: input longer
// than this cannot be 128 characters, and is refused without normalising it (no megabytes of work)
const MAX_RAW_UNITS = PASSWORD_MAX_LENGTH * 16;

/** NFKC so the same passphrase typed on different keyboards hashes the same (NIST SP 800-63B 3.1.1.2). */
export function normalizePassword(password: string): string {
  return password.normalize('NFKC');
}

/**
 * The length of a password: its characters (code points) after NFKC, as a person counts them and
 * as NIST SP 800-63B counts them. The one count used by signup, reset, the first admin, login and
 * the SMART login page, so every password that can be set can also be used to log in.
 */
export function passwordLength(password: string): number {
  let length = 0;
  for (const _ of normalizePassword(password)) length++;
  return length;
}

/** True for a password longer than any that can be set: cheap, so a login checks it before hashing. */
export function passwordTooLong(password: string): boolean {
  return password.length > MAX_RAW_UNITS || passwordLength(password) > PASSWORD_MAX_LENGTH;
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

/**
 * The dedicated hashing thread, started on the first password operation rather than at start-up:
 * most starts never hash (the thread and argon2's 19 MiB cost ~30 MB resident and ~150 ms of
 * start-up), and the first login pays the thread's start once.
 */
export async function createPasswordHasher(): Promise<PasswordHasher> {
  let thread: Promise<HashingThread> | undefined;
  let closed = false;
  const started = () => {
    if (closed) return Promise.reject(new Error('password hasher is closed'));
    thread ??= startHashingThread();
    return thread;
  };
  const verify = async (stored: string, password: string) => {
    try {
      return (await (await started()).run('verify', password, stored)) as boolean;
    } catch {
      return false;
    }
  };
  return {
    hash: async (password) => (await (await started()).run('hash', password)) as string,
    verify,
    verifyDummy: async (password) => {
      await verify((await started()).dummyHash, password);
    },
    close: async () => {
      closed = true;
      const running = thread;
      thread = undefined;
      if (running) await (await running).terminate();
    },
  };
}

interface HashingThread {
  run(op: 'hash' | 'verify', password: string, hash?: string): Promise<string | boolean>;
  /** A hash of a random password: unknown accounts are verified against it, so they take as long. */
  readonly dummyHash: string;
  terminate(): Promise<unknown>;
}

async function startHashingThread(): Promise<HashingThread> {
  const worker = new Worker(projectFile('src/auth/passwordWorker.mjs'), {
    workerData: { options: ARGON2_PARAMETERS },
  });
  worker.unref();
  const pending = new Map<number, Pending>();
  let nextId = 0;

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
      const id = nextId++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ id, op, password: normalizePassword(password), hash });
    });
  const dummyHash = (await run('hash', randomBytes(24).toString('base64url'))) as string;
  return { run, dummyHash, terminate: () => worker.terminate() };
}
