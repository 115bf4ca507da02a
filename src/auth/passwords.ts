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
  /** The normal-priority thread, started because a hash waited too long for the idle one (IDLE_RUN_PATIENCE_MS). */
  readonly fallback: boolean;
}

export interface PasswordHasherOptions {
  readonly priority: HashingPriority;
  /** Called as each thread runs, with the priority it got (a platform without SCHED_IDLE gives `normal`). */
  readonly onThreadStarted?: (started: HashingThreadStarted) => void;
  /** Called when a thread fails (it crashed or could not start); the next hash starts another. */
  readonly onThreadFailed?: (failed: { readonly message: string; readonly fallback: boolean }) => void;
  /** Tests only: how long a hash may run on the idle thread (default IDLE_RUN_PATIENCE_MS; ten times that in all). */
  readonly idlePatienceMs?: number;
  /** Tests only: the program run as util-linux's chrt (passwordWorker.mjs). */
  readonly chrt?: string;
  /** Tests only: the file each thread runs instead of passwordWorker.mjs. */
  readonly threadFile?: string;
}

/**
 * How long one hash may run on the idle-priority thread before a normal-priority thread runs it
 * too, whichever answers first (counted from the thread's start, not its own start-up of
 * 120–320 ms). A hash is 5–12 ms of CPU; a SCHED_IDLE thread on CPUs kept busy gets a weight of 3
 * against 1,024 and took 4–5 s a hash (docs/performance.md): without this bound a busy gateway
 * would stop logging anyone in.
 */
const IDLE_RUN_PATIENCE_MS = 100;

/**
 * How long a hash may wait in all (behind others, then on the thread) for the idle-priority
 * thread: ten times the above. 20 logins in flight queue ~250 ms behind it in the bench's storm.
 */
const IDLE_QUEUE_PATIENCE_FACTOR = 10;

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
  const started = () => {
    if (closed) return Promise.reject(closedError());
    if (!hashing) {
      const starting = startHashing(options);
      // a start that failed (its first hash) is tried again by the next call, not kept for good
      starting.catch(() => {
        if (hashing === starting) hashing = undefined;
      });
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
  const events = (fallback: boolean): ThreadEvents => ({
    started: (started) => options.onThreadStarted?.({ ...started, fallback }),
    failed: (message) => options.onThreadFailed?.({ message, fallback }),
  });
  const threads =
    options.priority === 'idle'
      ? idleFirst(options, events)
      : hashingThread({ priority: 'normal' }, events(false), options.threadFile);
  const run = (job: HashJob) => threads.run({ ...job, password: normalizePassword(job.password) });
  try {
    const dummyHash = (await run({ op: 'hash', password: randomBytes(24).toString('base64url') })) as string;
    return { run, dummyHash, terminate: () => threads.terminate() };
  } catch (error) {
    await threads.terminate();
    throw error;
  }
}

/** What a thread tells its owner: the priority it runs at once started, and that it failed. */
interface ThreadEvents {
  started(started: Omit<HashingThreadStarted, 'fallback'>): void;
  failed(message: string): void;
}

interface HashingThread {
  /** Hands the job to the thread (jobs queue there, in order). */
  run(job: HashJob): Promise<string | boolean>;
  /** Stops the thread and fails every job it still holds. */
  terminate(): Promise<unknown>;
}

interface ThreadMessage {
  readonly id: number;
  readonly result?: string | boolean;
  readonly error?: string;
  readonly started?: Omit<HashingThreadStarted, 'fallback'>;
}

const closedError = () => new Error('password hasher is closed');

/** A hashing thread at the priority asked, started by the first job; one that dies fails its jobs, and the next job starts another. */
function hashingThread(
  asked: { readonly priority: HashingPriority; readonly chrt?: string | undefined },
  events: ThreadEvents,
  file = projectFile('src/auth/passwordWorker.mjs'),
): HashingThread {
  let worker: Worker | undefined;
  const pending = new Map<number, Pending>();
  let nextId = 0;
  const fail = (error: Error) => {
    for (const entry of pending.values()) entry.reject(error);
    pending.clear();
  };
  const start = () => {
    const thread = new Worker(file, {
      workerData: { options: ARGON2_PARAMETERS, ...asked },
    });
    thread.unref();
    thread.on('message', (message: ThreadMessage) => {
      if (message.started) {
        events.started(message.started);
        return;
      }
      const entry = pending.get(message.id);
      if (!entry) return;
      pending.delete(message.id);
      if (message.error !== undefined) entry.reject(new Error(message.error));
      else entry.resolve(message.result as string | boolean);
    });
    thread.on('error', (error) => {
      events.failed(error.message);
      fail(error);
    });
    thread.on('exit', (code) => {
      // terminate() forgot it first: only a thread that stopped on its own is a failure
      if (worker !== thread) return;
      worker = undefined;
      events.failed(`the hashing thread stopped (exit code ${code})`);
      fail(new Error('the hashing thread stopped'));
    });
    return thread;
  };
  return {
    run: (job) =>
      new Promise<string | boolean>((resolve, reject) => {
        worker ??= start();
        const id = nextId++;
        pending.set(id, { resolve, reject });
        worker.postMessage({ id, ...job });
      }),
    terminate: async () => {
      const thread = worker;
      worker = undefined;
      fail(closedError());
      await thread?.terminate();
    },
  };
}

/** A job of the idle-first hashing, and whether the normal-priority thread has it too. */
interface Waiting extends Pending {
  readonly job: HashJob;
  rescued: boolean;
  timer?: NodeJS.Timeout;
  /** Threads given the job, and those that failed it: it fails only when every one has. */
  tries: number;
  failures: number;
}

/**
 * Runs the job on `thread` too: the first answer counts, and a failure only once no thread is
 * left to answer and `retry` (if given) did not hand the job to another.
 */
function attempt(thread: HashingThread, waiting: Waiting, retry?: () => boolean): Promise<void> {
  waiting.tries++;
  return thread.run(waiting.job).then(waiting.resolve, (error: Error) => {
    waiting.failures++;
    if (waiting.failures === waiting.tries && !retry?.()) waiting.reject(error);
  });
}

/**
 * `idle`: jobs go one at a time to the SCHED_IDLE thread. A job that has run there for the run
 * patience, or waited ten times that since it was asked for, goes to a normal-priority thread too,
 * started then, and the first answer counts. While the idle thread's own job is such a one, its
 * CPUs are busy, and every new job goes straight to the other thread. A burst of logins on CPUs
 * with room to spare never reaches it.
 */
function idleFirst(
  options: PasswordHasherOptions,
  events: (fallback: boolean) => ThreadEvents,
): HashingThread {
  const runPatienceMs = options.idlePatienceMs ?? IDLE_RUN_PATIENCE_MS;
  const queuePatienceMs = runPatienceMs * IDLE_QUEUE_PATIENCE_FACTOR;
  // the run patience counts once the thread runs (it reported its priority), not through its start-up
  let idleReady = false;
  let runTimer: NodeJS.Timeout | undefined;
  const idleEvents = events(false);
  const idle = hashingThread(
    { priority: 'idle', chrt: options.chrt },
    {
      started: (started) => {
        idleReady = true;
        idleEvents.started(started);
        watchRunning();
      },
      failed: (message) => {
        idleReady = false;
        idleEvents.failed(message);
      },
    },
    options.threadFile,
  );
  let fallback: HashingThread | undefined;
  const queue: Waiting[] = [];
  let running: Waiting | undefined;
  let terminated = false;

  const toFallback = (waiting: Waiting) => {
    waiting.rescued = true;
    fallback ??= hashingThread({ priority: 'normal' }, events(true), options.threadFile);
    void attempt(fallback, waiting);
  };
  const idleStalled = () => running?.rescued === true;
  const watchRunning = () => {
    const job = running;
    if (terminated || !job || job.rescued || !idleReady || runTimer) return;
    runTimer = setTimeout(() => {
      runTimer = undefined;
      if (running === job) rescue(job);
    }, runPatienceMs).unref();
  };
  const next = () => {
    if (terminated) return;
    if (idleStalled()) {
      for (const waiting of queue.splice(0)) {
        clearTimeout(waiting.timer);
        toFallback(waiting);
      }
      return;
    }
    const waiting = running ? undefined : queue.shift();
    if (!waiting) return;
    running = waiting;
    watchRunning();
    // the idle thread failing a job (it crashed) tries the other thread once, rather than refuse a right password
    const retry = () => {
      if (terminated || waiting.rescued) return false;
      clearTimeout(waiting.timer);
      toFallback(waiting);
      return true;
    };
    void attempt(idle, waiting, retry).finally(() => {
      clearTimeout(waiting.timer);
      clearTimeout(runTimer);
      runTimer = undefined;
      running = undefined;
      next();
    });
  };
  const rescue = (waiting: Waiting) => {
    if (terminated || waiting.rescued) return;
    const queued = queue.indexOf(waiting);
    if (queued >= 0) queue.splice(queued, 1);
    toFallback(waiting);
    next();
  };
  return {
    run: (job) =>
      new Promise<string | boolean>((resolve, reject) => {
        if (terminated) return reject(closedError());
        const waiting: Waiting = { job, resolve, reject, rescued: false, tries: 0, failures: 0 };
        if (idleStalled()) return toFallback(waiting);
        waiting.timer = setTimeout(() => rescue(waiting), queuePatienceMs).unref();
        queue.push(waiting);
        next();
      }),
    terminate: async () => {
      terminated = true;
      for (const waiting of queue.splice(0)) {
        clearTimeout(waiting.timer);
        waiting.reject(closedError());
      }
      clearTimeout(running?.timer);
      clearTimeout(runTimer);
      await Promise.all([idle.terminate(), fallback?.terminate()]);
    },
  };
}
