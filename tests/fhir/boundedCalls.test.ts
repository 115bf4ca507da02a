import { describe, expect, it } from 'vitest';
import { eachAtMost, withinMs } from '../../src/fhir/boundedCalls.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('calls a few at a time, within a deadline', () => {
  it('runs every item, never more than the limit at once', async () => {
    let running = 0;
    let most = 0;
    const done: number[] = [];
    await eachAtMost([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 3, async (n) => {
      running++;
      most = Math.max(most, running);
      await sleep(2);
      running--;
      done.push(n);
    });
    expect(done.sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(most).toBe(3);
  });

  // a refused write's other reads ran on, all of them, after its answer (diff review)
  it('starts nothing once a call failed', async () => {
    const started: number[] = [];
    const items = Array.from({ length: 20 }, (_, i) => i);
    const run = eachAtMost(items, 4, async (n) => {
      started.push(n);
      if (n === 0) throw new Error('refused');
      await sleep(5);
    });
    await expect(run).rejects.toThrow('refused');
    await sleep(30);
    expect(started.length).toBeLessThanOrEqual(4);
  });

  it('starts nothing once the deadline answered 504', async () => {
    const started: number[] = [];
    const stop = { stopped: false };
    const items = Array.from({ length: 20 }, (_, i) => i);
    const work = eachAtMost(
      items,
      2,
      async (n) => {
        started.push(n);
        await sleep(20);
      },
      stop,
    );
    await expect(withinMs(work, 30, 'too slow', stop)).rejects.toMatchObject({ code: 'upstream_timeout' });
    const atDeadline = started.length;
    await sleep(60);
    expect(started.length).toBeLessThanOrEqual(atDeadline + 2);
    expect(started.length).toBeLessThan(20);
  });
});
