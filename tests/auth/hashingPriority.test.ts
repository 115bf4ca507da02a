import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  createPasswordHasher,
  type HashingThreadStarted,
  type PasswordHasher,
  type PasswordHasherOptions,
} from '../../src/auth/passwords.js';
import { tempDir } from '../helpers/tempDir.js';

/**
 * The hashing thread's priority (PASSWORD_HASH_PRIORITY): `idle` puts that thread alone under
 * Linux's SCHED_IDLE, read back here from /proc as the kernel has it. What it buys (a login storm's
 * hashes no longer delay reads) is measured by `npm run bench`, not here (docs/performance.md).
 */

/** Linux's number for SCHED_IDLE in a thread's stat line (field 41, `policy`). */
const SCHED_IDLE = 5;
/** The checks read each thread's policy from Linux's /proc. */
const linux = process.platform === 'linux';
const canIdle =
  linux &&
  fs.existsSync('/proc/thread-self') &&
  ['/usr/bin/chrt', '/bin/chrt'].some(
    (file) => spawnSync(file, ['--version'], { stdio: 'ignore' }).status === 0,
  );

/** The scheduling policy of each thread of this process, by thread id. */
function threadPolicies(): Map<string, number> {
  const policies = new Map<string, number>();
  for (const tid of fs.readdirSync('/proc/self/task')) {
    const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    policies.set(tid, Number(stat.split(') ').pop()?.split(' ')[38]));
  }
  return policies;
}

const hashers: PasswordHasher[] = [];
afterEach(async () => {
  await Promise.all(hashers.splice(0).map((hasher) => hasher.close()));
});

/** A hasher whose threads have started (a hash ran), with what they reported. */
async function startedHasher(
  priority: PasswordHasherOptions['priority'],
  extra: Pick<PasswordHasherOptions, 'idlePatienceMs' | 'chrt' | 'idleThreads'> = {},
) {
  const reports: HashingThreadStarted[] = [];
  const hasher = await createPasswordHasher({
    priority,
    onThreadStarted: (report) => reports.push(report),
    ...extra,
  });
  hashers.push(hasher);
  const hash = await hasher.hash('a long and plain passphrase');
  // the first thread reports as it starts; on a loaded machine the hash may be answered first (by the fallback)
  const started = await vi.waitFor(() => {
    const report = reports.find((each) => !each.fallback);
    if (!report) throw new Error('the first thread has not reported yet');
    return report;
  });
  return { hasher, hash, started, reports };
}

/**
 * A busy loop on every core this process may use, at ordinary priority, until stopped (a few cores
 * at most: see the test). Resolves once every loop spins: a Node process takes tens of milliseconds
 * to boot, and hashes made before then would not meet busy cores at all.
 */
async function busyEveryCore(): Promise<() => void> {
  const loops: ChildProcess[] = Array.from({ length: os.availableParallelism() }, () =>
    spawn(process.execPath, ['-e', "process.stdout.write('spinning\\n'); for (;;) {}"], {
      stdio: ['ignore', 'pipe', 'ignore'],
    }),
  );
  const stop = () => {
    for (const loop of loops) loop.kill('SIGKILL');
  };
  try {
    await Promise.all(
      loops.map(
        (loop) =>
          new Promise<void>((resolve, reject) => {
            loop.stdout?.once('data', () => resolve());
            loop.once('error', reject);
            loop.once('exit', (code) => reject(new Error(`the busy loop exited (${code})`)));
          }),
      ),
    );
  } catch (error) {
    stop();
    throw error;
  }
  return stop;
}

describe('the hashing thread runs at the priority asked', () => {
  it.skipIf(!canIdle)('idle: one new thread under SCHED_IDLE, which hashes and verifies', async () => {
    const before = threadPolicies();
    const { hasher, hash, started } = await startedHasher('idle');
    expect(started).toEqual({ priority: 'idle', fallback: false });
    const idleThreads = [...threadPolicies()].filter(
      ([tid, policy]) => policy === SCHED_IDLE && before.get(tid) !== SCHED_IDLE,
    );
    expect(idleThreads).toHaveLength(1);
    // only that thread: the event loop's thread keeps its policy
    expect(threadPolicies().get(String(process.pid))).toBe(before.get(String(process.pid)));
    expect(await hasher.verify(hash, 'a long and plain passphrase')).toBe(true);
    expect(await hasher.verify(hash, 'another passphrase entirely')).toBe(false);
  });

  it.skipIf(!linux)('normal: no thread changes its policy', async () => {
    const before = threadPolicies();
    const { hasher, hash, started } = await startedHasher('normal');
    expect(started).toEqual({ priority: 'normal', fallback: false });
    const changed = [...threadPolicies()].filter(
      ([tid, policy]) => before.has(tid) && before.get(tid) !== policy,
    );
    expect(changed).toEqual([]);
    expect(await hasher.verify(hash, 'a long and plain passphrase')).toBe(true);
  });

  it('idle where it cannot be had (chrt fails): reports normal and why, and still hashes', async () => {
    const { hasher, hash, started } = await startedHasher('idle', { chrt: '/bin/false' });
    expect(started).toEqual(
      process.platform === 'linux'
        ? { priority: 'normal', reason: 'chrt --idle failed (exit 1)', fallback: false }
        : { priority: 'normal', reason: expect.any(String), fallback: false },
    );
    expect(await hasher.verify(hash, 'a long and plain passphrase')).toBe(true);
  });

  it.skipIf(!canIdle)(
    'idle with two threads: hashes in flight together run on two SCHED_IDLE threads, the second started only then',
    async () => {
      const before = threadPolicies();
      const newIdleThreads = () =>
        [...threadPolicies()].filter(
          ([tid, policy]) => policy === SCHED_IDLE && before.get(tid) !== SCHED_IDLE,
        );
      // a patience no loaded machine runs out of: the hashes stay on the idle threads
      const { hasher, hash, reports } = await startedHasher('idle', {
        idleThreads: 2,
        idlePatienceMs: 60_000,
      });
      // one hash at a time never needs the second
      expect(reports.filter((report) => !report.fallback)).toHaveLength(1);
      expect(newIdleThreads()).toHaveLength(1);
      const verified = await Promise.all(
        ['a long and plain passphrase', 'wrong', 'a long and plain passphrase', 'also wrong'].map(
          (password) => hasher.verify(hash, password),
        ),
      );
      expect(verified).toEqual([true, false, true, false]);
      await vi.waitFor(() =>
        expect(reports.filter((report) => !report.fallback)).toEqual([
          { priority: 'idle', fallback: false },
          { priority: 'idle', fallback: false },
        ]),
      );
      expect(newIdleThreads()).toHaveLength(2);
    },
  );

  it('idle with several threads where SCHED_IDLE cannot be had: one thread hashes, as with normal', async () => {
    const { hasher, hash, reports } = await startedHasher('idle', { chrt: '/bin/false', idleThreads: 3 });
    const verified = await Promise.all(
      ['a long and plain passphrase', 'wrong', 'a long and plain passphrase', 'also wrong'].map((password) =>
        hasher.verify(hash, password),
      ),
    );
    expect(verified).toEqual([true, false, true, false]);
    expect(reports.filter((report) => !report.fallback)).toHaveLength(1);
  });

  it.skipIf(!canIdle)(
    'idle stalled while a second idle thread still starts: its hash goes to the normal-priority thread too, not after the queue patience',
    async () => {
      vi.stubEnv('HASH_THREAD_STARTS', path.join(tempDir(), 'starts'));
      const reports: HashingThreadStarted[] = [];
      // 200 ms of run patience, so 2 s of queue patience
      const hasher = await createPasswordHasher({
        priority: 'idle',
        idleThreads: 2,
        idlePatienceMs: 200,
        stallHoldMs: 0,
        threadFile: path.resolve('tests/helpers/slowStartingHashWorker.mjs'),
        onThreadStarted: (report) => reports.push(report),
      });
      hashers.push(hasher);
      // the start-up hashes outlast the patience (the normal-priority thread answers them): let the idle thread finish them
      await hasher.hash('the first hash starts the threads');
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const asked = performance.now();
      const answered = await Promise.all(
        ['a first passphrase here', 'a second passphrase here'].map(async (password) => {
          await hasher.hash(password);
          return performance.now() - asked;
        }),
      );
      // the second thread (5 s to start) has not reported: both answers came from the normal-priority one
      expect(reports.filter((report) => !report.fallback)).toHaveLength(1);
      expect(Math.max(...answered)).toBeLessThan(1_500);
    },
  );

  // a loop per core: on a bigger machine that would be many processes for one test
  it.skipIf(!canIdle || os.availableParallelism() > 4).each([1, 2])(
    'idle on CPUs kept busy (idle threads: %i): after the patience, a normal-priority thread takes the hashes the idle ones get no CPU for',
    async (idleThreads) => {
      // started (and its dummy hash made) while the cores are free
      const { hasher, hash, reports } = await startedHasher('idle', { idleThreads });
      const stop = await busyEveryCore();
      try {
        // at SCHED_IDLE's weight each took 4–5 s on two busy cores (docs/performance.md)
        const verified = await Promise.all([
          hasher.verify(hash, 'a long and plain passphrase'),
          hasher.verify(hash, 'another passphrase entirely'),
          hasher.verify(hash, 'a long and plain passphrase'),
        ]);
        expect(verified).toEqual([true, false, true]);
      } finally {
        stop();
      }
      // every report in the message: a failure under a loaded suite (once, 2026-12-06) showed none
      await vi.waitFor(() =>
        expect(
          reports.filter((report) => report.fallback),
          JSON.stringify(reports),
        ).toEqual([{ priority: 'normal', fallback: true }]),
      );
      // a second idle thread starts only if the first was not found stalled before the loops spun
      // (on a loaded machine its start-up hash may be, and the hold then sends every hash past it)
      const idle = reports.filter((report) => !report.fallback);
      expect(idle.length).toBeGreaterThanOrEqual(1);
      expect(idle.length).toBeLessThanOrEqual(idleThreads);
      for (const report of idle) expect(report).toEqual({ priority: 'idle', fallback: false });
    },
  );

  it('idle whose every job outlasts the patience: both threads run it, the first answer counts once', async () => {
    const { hasher, hash, reports } = await startedHasher('idle', { idlePatienceMs: 0 });
    const verified = await Promise.all(
      ['a long and plain passphrase', 'wrong', 'a long and plain passphrase', 'also wrong'].map((password) =>
        hasher.verify(hash, password),
      ),
    );
    expect(verified).toEqual([true, false, true, false]);
    expect(reports.filter((report) => report.fallback)).toEqual([{ priority: 'normal', fallback: true }]);
    // a job both threads fail (a stored hash argon2 cannot read) fails once both have: never a hang
    expect(await hasher.verify('not an argon2 hash', 'a long and plain passphrase')).toBe(false);
    expect(
      await hasher.verify(await hasher.hash('a second passphrase here'), 'a second passphrase here'),
    ).toBe(true);
  });

  it.skipIf(!linux)(
    'closed with a hash on the idle thread: the hash fails, and no thread starts after',
    async () => {
      const baseline = fs.readdirSync('/proc/self/task').length;
      const { hasher, hash, reports } = await startedHasher('idle', { idlePatienceMs: 50 });
      const verifying = hasher.verify(hash, 'a long and plain passphrase');
      await hasher.close();
      // a verification the hasher could not finish refuses (never a hang, never an answer after close)
      expect(await verifying).toBe(false);
      const reported = reports.length;
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(reports).toHaveLength(reported);
      await vi.waitFor(() => expect(fs.readdirSync('/proc/self/task').length).toBeLessThanOrEqual(baseline));
      await expect(hasher.hash('a long and plain passphrase')).rejects.toThrow('closed');
    },
  );

  /**
   * A hasher whose threads exit at once while the marker file exists (crashingHashWorker.mjs);
   * `unbreak` removes it. Its failures are collected.
   */
  async function crashingHasher(priority: PasswordHasherOptions['priority']) {
    const marker = path.join(tempDir(), 'crash');
    fs.writeFileSync(marker, '');
    const failures: { message: string; fallback: boolean }[] = [];
    // the threads copy the environment as they start
    vi.stubEnv('HASH_THREAD_CRASH_MARKER', marker);
    const hasher = await createPasswordHasher({
      priority,
      threadFile: path.resolve('tests/helpers/crashingHashWorker.mjs'),
      onThreadFailed: (failure) => failures.push(failure),
    });
    hashers.push(hasher);
    return { hasher, failures, unbreak: () => fs.rmSync(marker) };
  }

  it.each(['normal', 'idle'] as const)(
    '%s: a thread that cannot start fails the hash, is reported, and the next hash starts another',
    async (priority) => {
      const { hasher, failures, unbreak } = await crashingHasher(priority);
      try {
        await expect(hasher.hash('a long and plain passphrase')).rejects.toThrow('stopped');
        expect(failures[0]).toEqual({ message: 'the hashing thread stopped (exit code 1)', fallback: false });
        // idle: the normal-priority thread was tried too, and failed the same way
        if (priority === 'idle') expect(failures.map((failure) => failure.fallback)).toContain(true);
        // the failed start is not kept: once threads can start, hashing works again
        unbreak();
        const hash = await hasher.hash('a long and plain passphrase');
        expect(await hasher.verify(hash, 'a long and plain passphrase')).toBe(true);
      } finally {
        vi.unstubAllEnvs();
      }
    },
  );

  it('threads that keep failing to start are not started for every hash: after two, a second passes first', async () => {
    const { hasher, failures, unbreak } = await crashingHasher('normal');
    try {
      await expect(hasher.hash('a long and plain passphrase')).rejects.toThrow('stopped');
      await expect(hasher.hash('a long and plain passphrase')).rejects.toThrow('stopped');
      expect(failures).toHaveLength(2);
      unbreak();
      // within the second after two failed starts: refused at once, no thread started
      await expect(hasher.hash('a long and plain passphrase')).rejects.toThrow('failed to start');
      expect(await hasher.verify('not an argon2 hash', 'a long and plain passphrase')).toBe(false);
      expect(failures).toHaveLength(2);
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const hash = await hasher.hash('a long and plain passphrase');
      expect(await hasher.verify(hash, 'a long and plain passphrase')).toBe(true);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('a thread that dies of an uncaught error fails the hash and is reported once', async () => {
    const failures: { message: string; fallback: boolean }[] = [];
    const hasher = await createPasswordHasher({
      priority: 'normal',
      threadFile: path.resolve('tests/helpers/throwingHashWorker.mjs'),
      onThreadFailed: (failure) => failures.push(failure),
    });
    hashers.push(hasher);
    await expect(hasher.hash('a long and plain passphrase')).rejects.toThrow('crashed');
    // its 'exit' follows the 'error': one failure, not two
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(failures).toEqual([{ message: 'the stand-in thread crashed', fallback: false }]);
  });

  it('idle after its thread stalled: hashes skip it for the hold, then it is tried again', async () => {
    const log = path.join(tempDir(), 'jobs');
    const jobsOnIdle = () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').length - 1 : 0);
    vi.stubEnv('HASH_THREAD_JOB_LOG', log);
    try {
      const hasher = await createPasswordHasher({
        priority: 'idle',
        threadFile: path.resolve('tests/helpers/slowIdleHashWorker.mjs'),
        chrt: '/bin/false',
        idlePatienceMs: 50,
        stallHoldMs: 2_000,
      });
      hashers.push(hasher);
      // the first job (the hasher's own dummy hash) stalls on the idle thread; the hold begins
      const hash = await hasher.hash('a long and plain passphrase');
      // past the stalled job's 300 ms: the idle thread is free, yet held from
      await new Promise((resolve) => setTimeout(resolve, 400));
      for (const password of ['a long and plain passphrase', 'wrong', 'a long and plain passphrase'])
        await hasher.verify(hash, password);
      expect(jobsOnIdle()).toBe(1);
      await new Promise((resolve) => setTimeout(resolve, 1_700));
      expect(await hasher.verify(hash, 'a long and plain passphrase')).toBe(true);
      expect(jobsOnIdle()).toBe(2);
    } finally {
      vi.unstubAllEnvs();
    }
  });
});
