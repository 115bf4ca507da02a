import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createPasswordHasher,
  type HashingThreadStarted,
  type PasswordHasher,
  type PasswordHasherOptions,
} from '../../src/auth/passwords.js';

/**
 * The hashing thread's priority (PASSWORD_HASH_PRIORITY): `idle` puts that thread alone under
 * Linux's SCHED_IDLE, read back here from /proc as the kernel has it. What it buys (a login storm's
 * hashes no longer delay reads) is measured by `npm run bench`, not here (docs/performance.md).
 */

/** Linux's number for SCHED_IDLE in a thread's stat line (field 41, `policy`). */
const SCHED_IDLE = 5;
const canIdle =
  process.platform === 'linux' &&
  fs.existsSync('/proc/thread-self') &&
  spawnSync('chrt', ['--version'], { stdio: 'ignore' }).status === 0;

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

/** A hasher whose thread has started (a hash ran), with what its threads reported. */
async function startedHasher(priority: PasswordHasherOptions['priority'], idlePatienceMs?: number) {
  const reports: HashingThreadStarted[] = [];
  const hasher = await createPasswordHasher({
    priority,
    onThreadStarted: (report) => reports.push(report),
    ...(idlePatienceMs === undefined ? {} : { idlePatienceMs }),
  });
  hashers.push(hasher);
  const hash = await hasher.hash('a long and plain passphrase');
  // on a loaded machine the idle thread's report may come after the fallback's
  return { hasher, hash, started: reports.find((report) => !report.fallback), reports };
}

/** A busy loop on every core this process may use, at ordinary priority, until stopped. */
function busyEveryCore(): () => void {
  const loops: ChildProcess[] = Array.from({ length: os.availableParallelism() }, () =>
    spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }),
  );
  return () => {
    for (const loop of loops) loop.kill('SIGKILL');
  };
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

  it('normal: no thread changes its policy', async () => {
    const before = threadPolicies();
    const { hasher, hash, started } = await startedHasher('normal');
    expect(started).toEqual({ priority: 'normal', fallback: false });
    const changed = [...threadPolicies()].filter(
      ([tid, policy]) => before.has(tid) && before.get(tid) !== policy,
    );
    expect(changed).toEqual([]);
    expect(await hasher.verify(hash, 'a long and plain passphrase')).toBe(true);
  });

  it('idle where it cannot be had (no chrt): reports normal and why, and still hashes', async () => {
    const path = process.env.PATH;
    // the thread takes a copy of the environment when the first hash starts it: a PATH without chrt
    process.env.PATH = '/nonexistent';
    let result: Awaited<ReturnType<typeof startedHasher>>;
    try {
      result = await startedHasher('idle');
    } finally {
      process.env.PATH = path;
    }
    expect(result.started?.priority).toBe('normal');
    expect(result.started?.reason).toEqual(expect.any(String));
    expect(await result.hasher.verify(result.hash, 'a long and plain passphrase')).toBe(true);
  });

  it.skipIf(!canIdle)(
    'idle on CPUs kept busy: a normal-priority thread takes the hash the idle one gets no CPU for',
    async () => {
      // started (and its dummy hash made) while the cores are free
      const { hasher, hash, reports } = await startedHasher('idle');
      const stop = busyEveryCore();
      try {
        // at SCHED_IDLE's weight these took 4–5 s each on two busy cores (docs/performance.md)
        const verified = await Promise.all([
          hasher.verify(hash, 'a long and plain passphrase'),
          hasher.verify(hash, 'another passphrase entirely'),
          hasher.verify(hash, 'a long and plain passphrase'),
        ]);
        expect(verified).toEqual([true, false, true]);
      } finally {
        stop();
      }
      expect(reports).toHaveLength(2);
      expect(reports).toEqual(
        expect.arrayContaining([
          { priority: 'idle', fallback: false },
          { priority: 'normal', fallback: true },
        ]),
      );
    },
  );

  it('idle whose every job outlasts the patience: both threads run it, the first answer counts once', async () => {
    const { hasher, hash, reports } = await startedHasher('idle', 0);
    const verified = await Promise.all(
      ['a long and plain passphrase', 'wrong', 'a long and plain passphrase', 'also wrong'].map((password) =>
        hasher.verify(hash, password),
      ),
    );
    expect(verified).toEqual([true, false, true, false]);
    expect(reports.filter((report) => report.fallback)).toEqual([{ priority: 'normal', fallback: true }]);
    expect(
      await hasher.verify(await hasher.hash('a second passphrase here'), 'a second passphrase here'),
    ).toBe(true);
  });
});
