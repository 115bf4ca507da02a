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
 * The CPU priority of password hashing (PASSWORD_HASH_PRIORITY). `idle`: a thread under Linux's
 * SCHED_IDLE (set by passwordWorker.mjs), so hashing takes only the CPU time that requests leave,
 * with a normal-priority thread behind it for when it gets none; `normal`: one thread, as every
 * other thread. docs/operations.md, "Password hashing".
 */
export type HashingPriority = 'idle' | 'normal';

/** What a hashing thread reports once started: the priority it runs at, and why not the one asked. */
export interface HashingThreadStarted {
  readonly priority: HashingPriority;
  readonly reason?: string;
  /** The normal-priority thread started because the idle one got no CPU (see IDLE_PATIENCE_MS). */
  readonly fallback: boolean;
}

export interface PasswordHasherOptions {
  readonly priority: HashingPriority;
  /** Called as each thread runs, with the priority it got (a platform without SCHED_IDLE gives `normal`). */
  readonly onThreadStarted?: (started: HashingThreadStarted) => void;
  /** Tests only: how long the idle thread may go without finishing a hash (default IDLE_PATIENCE_MS). */
  readonly idlePatienceMs?: number;
}

/**
 * How long one hash may take on the idle-priority thread before a normal-priority thread takes
 * the hashes waiting behind it (and the same one again, whichever ends first). A hash is 5–12 ms
 * of CPU; a SCHED_IDLE thread on CPUs kept busy gets a weight of 3 against 1,024 and took 4–5 s
 * (docs/performance.md): without this bound a busy gateway would stop logging anyone in.
 */
const IDLE_PATIENCE_MS = 250;

/**
 * The hashing threads, started on the first password operation rather than at start-up: most
 * starts never hash (a thread and argon2's 19 MiB cost ~30 MB resident and ~150 ms of start-up),
 * and the first login pays the thread's start once.
 */
export async function createPasswordHasher(
  options: PasswordHasherOptions = { priority: 'normal' },
): Promise<PasswordHasher> {
  let hashing: Promise<Hashing> | undefined;
  let closed = false;
  const started = () => {
    if (closed) return Promise.reject(new Error('password hasher is closed'));
    hashing ??= startHashing(options);
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

/** One argon2 operation; the password is normalised (NFKC) before it leaves for a thread. */
interface HashJob {
  readonly op: 'hash' | 'verify';
  readonly password: string;
  readonly hash?: string;
}

interface Hashing {
  run(job: HashJob): Promise<string | boolean>;
  /** A hash of a random password: unknown accounts are verified against it, so they take as long. */
  readonly dummyHash: string;
  terminate(): Promise<unknown>;
}

async function startHashing(options: PasswordHasherOptions): Promise<Hashing> {
  const report = (started: HashingThreadStarted) => options.onThreadStarted?.(started);
  const threads =
    options.priority === 'idle'
      ? idleFirst(options.idlePatienceMs ?? IDLE_PATIENCE_MS, report)
      : hashingThread('normal', (started) => report({ ...started, fallback: false }));
  const run = (job: HashJob) => threads.run({ ...job, password: normalizePassword(job.password) });
  const dummyHash = (await run({ op: 'hash', password: randomBytes(24).toString('base64url') })) as string;
  return { run, dummyHash, terminate: () => threads.terminate() };
}

interface HashingThread {
  /** Hands the job to the thread (jobs queue there, in order). */
  run(job: HashJob): Promise<string | boolean>;
  terminate(): Promise<unknown>;
}

interface ThreadMessage {
  readonly id: number;
  readonly result?: string | boolean;
  readonly error?: string;
  readonly started?: Omit<HashingThreadStarted, 'fallback'>;
}

function hashingThread(
  priority: HashingPriority,
  onStarted: (started: Omit<HashingThreadStarted, 'fallback'>) => void,
): HashingThread {
  const worker = new Worker(projectFile('src/auth/passwordWorker.mjs'), {
    workerData: { options: ARGON2_PARAMETERS, priority },
  });
  worker.unref();
  const pending = new Map<number, Pending>();
  let nextId = 0;

  worker.on('message', (message: ThreadMessage) => {
    if (message.started) {
      onStarted(message.started);
      return;
    }
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

  const run = (job: HashJob) =>
    new Promise<string | boolean>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ id, ...job });
    });
  return { run, terminate: () => worker.terminate() };
}

interface QueuedJob extends Pending {
  readonly job: HashJob;
}

/**
 * `idle`: jobs go one at a time to the SCHED_IDLE thread, so it is known when each began. One that
 * has not ended after `patienceMs` means the CPUs are busy: a normal-priority thread (started
 * then, once) runs that job too, the first answer wins, and it takes every job queued until the
 * idle thread is free again. A burst of logins on CPUs with room to spare never reaches it.
 */
function idleFirst(patienceMs: number, report: (started: HashingThreadStarted) => void): HashingThread {
  const idle = hashingThread('idle', (started) => report({ ...started, fallback: false }));
  let fallback: HashingThread | undefined;
  const queue: QueuedJob[] = [];
  let running: { readonly queued: QueuedJob; stalled: boolean; readonly timer: NodeJS.Timeout } | undefined;

  const onFallback = (queued: QueuedJob) => {
    fallback ??= hashingThread('normal', (started) => report({ ...started, fallback: true }));
    fallback.run(queued.job).then(queued.resolve, queued.reject);
  };
  const next = () => {
    if (running?.stalled) {
      for (const queued of queue.splice(0)) onFallback(queued);
      return;
    }
    const queued = running ? undefined : queue.shift();
    if (!queued) return;
    const timer = setTimeout(() => {
      if (running?.queued !== queued) return;
      running.stalled = true;
      onFallback(queued);
      next();
    }, patienceMs);
    running = { queued, stalled: false, timer };
    idle
      .run(queued.job)
      .then(queued.resolve, queued.reject)
      .finally(() => {
        clearTimeout(timer);
        running = undefined;
        next();
      });
  };
  return {
    run: (job) =>
      new Promise<string | boolean>((resolve, reject) => {
        queue.push({ job, resolve, reject });
        next();
      }),
    terminate: () => Promise.all([idle.terminate(), fallback?.terminate()]),
  };
}
