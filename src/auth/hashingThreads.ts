import { Worker } from 'node:worker_threads';
import { projectFile } from '../paths.js';

/**
 * The threads that run argon2id (src/auth/passwordWorker.mjs) for the password hasher
 * (passwords.ts): one at normal priority, or idle-priority ones with a normal-priority thread
 * behind them (`idleFirst`). docs/operations.md, "Password hashing".
 */

/**
 * The CPU priority of password hashing (PASSWORD_HASH_PRIORITY). `idle`: threads under Linux's
 * SCHED_IDLE (set by passwordWorker.mjs), so hashing takes only the CPU time that requests leave,
 * with a normal-priority thread behind them for when they get none; `normal`: one thread, as every
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

interface Pending {
  resolve: (value: string | boolean) => void;
  reject: (error: Error) => void;
}

/** One argon2 operation; the password is normalised (NFKC) before it leaves for a thread. */
export interface HashJob {
  readonly op: 'hash' | 'verify';
  readonly password: string;
  readonly hash?: string;
}

/** What every hashing thread is started with. */
export interface ThreadSettings {
  /** argon2id's parameters (ARGON2_PARAMETERS in passwords.ts). */
  readonly argon2: Readonly<Record<string, number>>;
  /** Tests only: the program run as util-linux's chrt (passwordWorker.mjs). */
  readonly chrt?: string | undefined;
}

/** What `idleFirst` is started with. */
export interface IdleFirstOptions extends ThreadSettings {
  /** How many SCHED_IDLE threads hash (PASSWORD_HASH_THREADS; default 1), each started when a job finds the others busy. */
  readonly idleThreads?: number | undefined;
  /** Tests only: how long a hash may run on an idle thread (default IDLE_RUN_PATIENCE_MS; ten times that in all). */
  readonly idlePatienceMs?: number | undefined;
  /** Tests only: the file each thread runs instead of passwordWorker.mjs. */
  readonly threadFile?: string | undefined;
  /** Tests only: how long hashes skip the idle threads after one stalled (default IDLE_STALL_HOLD_MS). */
  readonly stallHoldMs?: number | undefined;
}

/**
 * How long one hash may run on an idle-priority thread before a normal-priority thread runs it
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
 * After an idle thread's own hash ran out of patience, every hash goes to the normal-priority
 * thread for this long (and while that stalled hash still runs): CPUs found busy stay busy a
 * while, and each hash would otherwise pay the patience again first.
 */
const IDLE_STALL_HOLD_MS = 10_000;

/** What a thread tells its owner: the priority it runs at once started, and that it failed. */
export interface ThreadEvents {
  started(started: Omit<HashingThreadStarted, 'fallback'>): void;
  failed(message: string): void;
}

export interface HashingThread {
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

export const closedError = () => new Error('password hasher is closed');

/** A hashing thread at the priority asked, started by the first job; one that dies fails its jobs, and the next job starts another. */
export function hashingThread(
  asked: ThreadSettings & { readonly priority: HashingPriority },
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
      workerData: { options: asked.argon2, priority: asked.priority, chrt: asked.chrt },
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
    // an uncaught error is followed by 'exit': one failure, reported once
    let crashed = false;
    thread.on('error', (error) => {
      crashed = true;
      events.failed(error.message);
      fail(error);
    });
    thread.on('exit', (code) => {
      // terminate() forgot it first: only a thread that stopped on its own is a failure
      if (worker !== thread) return;
      worker = undefined;
      if (!crashed) events.failed(`the hashing thread stopped (exit code ${code})`);
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

/** One idle-priority thread of `idleFirst`, and the job it runs. */
interface IdleSlot {
  readonly thread: HashingThread;
  /** It reported its priority: the run patience counts from then, not through its start-up. */
  ready: boolean;
  running?: Waiting;
  runTimer?: NodeJS.Timeout;
}

/**
 * `idle`: jobs go one at a time to each of the SCHED_IDLE threads (`idleThreads`, the first free
 * one, so a second thread starts only when the first is busy). A job that has run on one for the
 * run patience, or waited ten times that since it was asked for, goes to a normal-priority thread
 * too, started then, and the first answer counts. While an idle thread's own job is such a one,
 * and for IDLE_STALL_HOLD_MS after it ran out of patience, the CPUs are busy, and every job goes
 * straight to the other thread. A burst of logins on CPUs with room to spare never reaches it.
 */
export function idleFirst(
  options: IdleFirstOptions,
  events: (fallback: boolean) => ThreadEvents,
): HashingThread {
  const runPatienceMs = options.idlePatienceMs ?? IDLE_RUN_PATIENCE_MS;
  const queuePatienceMs = runPatienceMs * IDLE_QUEUE_PATIENCE_FACTOR;
  const idleEvents = events(false);
  // set once a thread could not get SCHED_IDLE: more such threads would take the cores from requests
  let onlyFirstSlot = false;
  const idleSlot = (): IdleSlot => {
    const slot: IdleSlot = {
      ready: false,
      thread: hashingThread(
        { ...options, priority: 'idle' },
        {
          started: (started) => {
            slot.ready = true;
            if (started.priority !== 'idle') onlyFirstSlot = true;
            idleEvents.started(started);
            watchRunning(slot);
          },
          failed: (message) => {
            slot.ready = false;
            idleEvents.failed(message);
          },
        },
        options.threadFile,
      ),
    };
    return slot;
  };
  const slots = Array.from({ length: Math.max(1, options.idleThreads ?? 1) }, idleSlot);
  let fallback: HashingThread | undefined;
  const queue: Waiting[] = [];
  let terminated = false;

  const toFallback = (waiting: Waiting) => {
    waiting.rescued = true;
    fallback ??= hashingThread(
      { argon2: options.argon2, priority: 'normal' },
      events(true),
      options.threadFile,
    );
    void attempt(fallback, waiting);
  };
  let heldUntil = 0;
  const idleStalled = () =>
    slots.some((slot) => slot.running?.rescued === true) || performance.now() < heldUntil;
  function watchRunning(slot: IdleSlot) {
    const job = slot.running;
    if (terminated || !job || job.rescued || !slot.ready || slot.runTimer) return;
    slot.runTimer = setTimeout(() => {
      slot.runTimer = undefined;
      if (slot.running !== job) return;
      heldUntil = performance.now() + (options.stallHoldMs ?? IDLE_STALL_HOLD_MS);
      rescue(job);
      // the CPUs are busy: a job on a thread still starting (its timer not yet set) would wait out the queue patience
      for (const other of slots) if (other.running && !other.ready) rescue(other.running);
    }, runPatienceMs).unref();
  }
  const runOn = (slot: IdleSlot, waiting: Waiting) => {
    slot.running = waiting;
    watchRunning(slot);
    // an idle thread failing a job (it crashed) tries the other thread once, rather than refuse a right password
    const retry = () => {
      if (terminated || waiting.rescued) return false;
      clearTimeout(waiting.timer);
      toFallback(waiting);
      return true;
    };
    void attempt(slot.thread, waiting, retry).finally(() => {
      clearTimeout(waiting.timer);
      clearTimeout(slot.runTimer);
      slot.runTimer = undefined;
      slot.running = undefined;
      next();
    });
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
    for (const slot of onlyFirstSlot ? slots.slice(0, 1) : slots) {
      if (queue.length === 0) return;
      if (!slot.running) runOn(slot, queue.shift() as Waiting);
    }
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
      for (const slot of slots) {
        clearTimeout(slot.running?.timer);
        clearTimeout(slot.runTimer);
      }
      await Promise.all([...slots.map((slot) => slot.thread.terminate()), fallback?.terminate()]);
    },
  };
}
