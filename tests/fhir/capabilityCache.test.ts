import type { CapabilityStatement } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { CAPABILITY_REUSE_MS, createCapabilityCache } from '../../src/fhir/capability.js';

/** A build the test answers: each call waits until `settle` (ok, or a failure). */
function heldBuilds() {
  const pending: { resolve(s: CapabilityStatement): void; reject(e: Error): void }[] = [];
  let builds = 0;
  const build = () =>
    new Promise<CapabilityStatement>((resolve, reject) => {
      builds++;
      pending.push({ resolve, reject });
    });
  const statement = (n: number) =>
    ({ resourceType: 'CapabilityStatement', id: String(n) }) as CapabilityStatement;
  const settle = async (outcome: number | Error) => {
    const next = pending.shift();
    if (!next) throw new Error('no build to settle');
    if (outcome instanceof Error) next.reject(outcome);
    else next.resolve(statement(outcome));
    await new Promise((r) => setImmediate(r));
  };
  return { build, settle, builds: () => builds };
}

describe('the /fhir/metadata statement, reused', () => {
  it('is built once for callers at once and reused until its time is up', async () => {
    let now = 0;
    const held = heldBuilds();
    const cache = createCapabilityCache(held.build, () => now);
    const both = Promise.all([cache.get(), cache.get()]);
    await held.settle(1);
    expect((await both).map((s) => s.id)).toEqual(['1', '1']);
    now = CAPABILITY_REUSE_MS - 1;
    expect((await cache.get()).id).toBe('1');
    expect(held.builds()).toBe(1);
  });

  it('past its time, answers the last statement while one build makes the next, and keeps it when that fails', async () => {
    let now = 0;
    const held = heldBuilds();
    const cache = createCapabilityCache(held.build, () => now);
    const first = cache.get();
    await held.settle(1);
    await first;
    now = CAPABILITY_REUSE_MS;
    expect((await cache.get()).id).toBe('1');
    expect((await cache.get()).id).toBe('1');
    expect(held.builds()).toBe(2);
    await held.settle(new Error('upstream down'));
    expect((await cache.get()).id).toBe('1'); // kept; a new build begins
    await held.settle(2);
    expect((await cache.get()).id).toBe('2');
    expect(held.builds()).toBe(3);
  });

  it('with nothing built yet, a failure reaches its callers and the next call builds again', async () => {
    const held = heldBuilds();
    const cache = createCapabilityCache(held.build, () => 0);
    const failing = expect(cache.get()).rejects.toThrow('upstream down');
    await held.settle(new Error('upstream down'));
    await failing;
    const next = cache.get();
    await held.settle(3);
    expect((await next).id).toBe('3');
  });
});
