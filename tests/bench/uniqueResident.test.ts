import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rssMiB, uniqueResidentMiB } from '../../bench/lib.js';

// the bench's "distinct pages" figure: frame numbers are shown only to a privileged process
const privileged = uniqueResidentMiB([process.pid]) !== undefined;

describe.skipIf(!privileged)('uniqueResidentMiB (bench/lib.ts)', () => {
  // idle Node processes: their pages stay put while measured (this one's own heap does not)
  const idle: ChildProcess[] = [];
  beforeAll(async () => {
    for (let i = 0; i < 2; i++)
      idle.push(spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' }));
    // a started process has its code paged in
    await new Promise((resolve) => setTimeout(resolve, 500));
  });
  afterAll(async () => {
    for (const child of idle) {
      child.kill();
      await once(child, 'exit');
    }
  });
  const pids = () => idle.map((child) => child.pid as number);

  it('counts a process given twice once', () => {
    const [first] = pids() as [number];
    const once = uniqueResidentMiB([first]) as number;
    // a page the process touches between two readings moves the figure by at most a rounding
    expect(Math.abs((uniqueResidentMiB([first, first]) as number) - once)).toBeLessThanOrEqual(1);
  });

  it('counts the Node binary two processes share once, where summed RSS counts it twice', () => {
    const [first, second] = pids() as [number, number];
    const summed = rssMiB([first, second]);
    const largest = Math.max(rssMiB(first), rssMiB(second));
    const distinct = uniqueResidentMiB([first, second]) as number;
    expect(distinct).toBeGreaterThanOrEqual(largest - 1);
    // an idle process's own heap is a few MiB; most of its RSS is the binary the other maps too
    expect(summed - distinct).toBeGreaterThan(15);
  });
});

describe('uniqueResidentMiB, unprivileged or not', () => {
  it('skips a process that is gone', () => {
    expect(uniqueResidentMiB([2 ** 22 + 12_345])).toBe(0);
  });
});
