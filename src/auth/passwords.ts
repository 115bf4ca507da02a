import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import {
  closedError,
  type HashingPriority,
  type HashingThreadStarted,
  type HashJob,
  hashingThread,
  type IdleFirstOptions,
  idleFirst,
  type ThreadEvents,
} from './hashingThreads.js';

export type { HashingPriority, HashingThreadStarted };

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

/**
 * argon2id on the calling thread, for the first admin (ADMIN_EMAIL) created before the gateway
 * listens: nothing is served yet, so a first hash's ~13 ms of blocking harms nobody, while a
 * hashing thread would cost its own start (120–320 ms and ~30 MB resident) and, at idle priority,
 * wait for a core the other starting processes hold. The same library and ARGON2_PARAMETERS as
 * the threads.
 */
export async function hashBeforeServing(password: string): Promise<string> {
  // required, not imported: an ES import of this CommonJS package took 15–18 ms against 5
  const argon2 = createRequire(import.meta.url)('@node-rs/argon2') as typeof import('@node-rs/argon2');
  return argon2.hashSync(
    normalizePassword(password),
    ARGON2_PARAMETERS as Parameters<typeof argon2.hashSync>[1],
  );
}

export interface PasswordHasher {
  hash(password: string): Promise<string>;
  verify(hash: string, password: string): Promise<boolean>;
  /** Spends the time of one verification on a throwaway hash, for unknown accounts. */
  verifyDummy(password: string): Promise<void>;
  close(): Promise<void>;
}

/** The hasher's settings; the tests' own (chrt, patience, thread file) are `idleFirst`'s (hashingThreads.ts). */
export interface PasswordHasherOptions extends Omit<IdleFirstOptions, 'argon2'> {
  readonly priority: HashingPriority;
  /** Called as each thread runs, with the priority it got (a platform without SCHED_IDLE gives `normal`). */
  readonly onThreadStarted?: (started: HashingThreadStarted) => void;
  /** Called when a thread fails (it crashed or could not start); the next hash starts another. */
  readonly onThreadFailed?: (failed: { readonly message: string; readonly fallback: boolean }) => void;
}

/** After two failed starts in a row the next waits 1 s, then 2, 4 ... up to 30 s (the first retry is at once). */
const startRetryDelayMs = (failedStarts: number) =>
  failedStarts < 2 ? 0 : Math.min(30_000, 1_000 * 2 ** (failedStarts - 2));

/**
 * The hashing threads, started on the first password operation rather than at start-up: most
 * starts never hash (a thread and argon2's 19 MiB cost ~30 MB resident and ~150 ms of start-up),
 * and the first login pays the thread's start once. Without options, one thread at normal
 * priority (the scripts); the server passes PASSWORD_HASH_PRIORITY, whose default is `idle`.
 */
export async function createPasswordHasher(
  options: PasswordHasherOptions = { priority: 'normal' },
): Promise<PasswordHasher> {
  let hashing: Promise<Hashing> | undefined;
  let closed = false;
  let failedStarts = 0;
  let nextStartAt = 0;
  const started = () => {
    if (closed) return Promise.reject(closedError());
    if (!hashing) {
      // threads that keep failing to start (a broken native module) are not started for every login
      if (performance.now() < nextStartAt)
        return Promise.reject(new Error('password hashing failed to start'));
      const starting = startHashing(options);
      // a start that failed (its first hash) is tried again by a later call, not kept for good
      starting.then(
        () => {
          failedStarts = 0;
        },
        () => {
          failedStarts++;
          nextStartAt = performance.now() + startRetryDelayMs(failedStarts);
          if (hashing === starting) hashing = undefined;
        },
      );
      hashing = starting;
    }
    return hashing;
  };
  const verify = async (stored: string, password: string) => {
    try {
      return (await (await started()).run({ op: 'verify', password, hash: stored })) as boolean;
    } catch {
      return false;
    }
  };
  return {
    hash: async (password) => (await (await started()).run({ op: 'hash', password })) as string,
    verify,
    verifyDummy: async (password) => {
      await verify((await started()).dummyHash, password);
    },
    close: async () => {
      closed = true;
      const running = hashing;
      hashing = undefined;
      if (running) await (await running).terminate();
    },
  };
}

interface Hashing {
  run(job: HashJob): Promise<string | boolean>;
  /** A hash of a random password: unknown accounts are verified against it, so they take as long. */
  readonly dummyHash: string;
  terminate(): Promise<unknown>;
}

async function startHashing(options: PasswordHasherOptions): Promise<Hashing> {
  const events = (fallback: boolean): ThreadEvents => ({
    started: (started) => options.onThreadStarted?.({ ...started, fallback }),
    failed: (message) => options.onThreadFailed?.({ message, fallback }),
  });
  const threads =
    options.priority === 'idle'
      ? idleFirst({ ...options, argon2: ARGON2_PARAMETERS }, events)
      : hashingThread(
          { argon2: ARGON2_PARAMETERS, chrt: options.chrt, priority: 'normal' },
          events(false),
          options.threadFile,
        );
  const run = (job: HashJob) => threads.run({ ...job, password: normalizePassword(job.password) });
  try {
    const dummyHash = (await run({ op: 'hash', password: randomBytes(24).toString('base64url') })) as string;
    return { run, dummyHash, terminate: () => threads.terminate() };
  } catch (error) {
    await threads.terminate();
    throw error;
  }
}
