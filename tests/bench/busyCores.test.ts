import { describe, expect, it } from 'vitest';
import { busyCores, machineTicks } from '../../bench/lib.js';

describe('machineTicks', () => {
  it.each([
    // user nice system idle iowait irq softirq steal guest guest_nice: guest time is in user already
    ['cpu  100 5 20 800 50 1 2 3 7 0\ncpu0 50 2 10 400 25 0 1 1 3 0\n', { total: 981, idle: 850 }],
    ['cpu 10 0 0 90 0 0 0 0 0 0\n', { total: 100, idle: 90 }],
  ])('reads the first line of %j', (stat, ticks) => {
    expect(machineTicks(stat)).toEqual(ticks);
  });

  it('reads this machine', () => {
    const ticks = machineTicks();
    expect(ticks.total).toBeGreaterThan(0);
    expect(ticks.idle).toBeLessThanOrEqual(ticks.total);
  });
});

describe('busyCores', () => {
  it.each([
    [{ total: 0, idle: 0 }, { total: 200, idle: 100 }, 2, 1],
    [{ total: 0, idle: 0 }, { total: 200, idle: 0 }, 2, 2],
    [{ total: 0, idle: 0 }, { total: 200, idle: 200 }, 2, 0],
    [{ total: 100, idle: 50 }, { total: 400, idle: 150 }, 4, 2.67],
    // no time passed: nothing to divide
    [{ total: 100, idle: 50 }, { total: 100, idle: 50 }, 2, 0],
  ])('%j to %j on %i cores: %d busy', (before, after, cores, busy) => {
    expect(busyCores(before, after, cores)).toBe(busy);
  });
});
