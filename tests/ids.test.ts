import { describe, expect, it } from 'vitest';
import { isUuidV7, uuidv7, uuidv7Floor } from '../src/ids.js';

describe('uuidv7Floor', () => {
  const t = Date.UTC(2026, 11, 6, 12, 0, 0, 123);
  it.each([
    ['an id made at the mark', t, false],
    ['an id made a millisecond later', t + 1, false],
    ['an id made a millisecond earlier', t - 1, true],
    ['an id made a day earlier', t - 86_400_000, true],
  ])('compares %s as made before it: %s', (_, madeAt, before) => {
    for (let i = 0; i < 50; i++) expect(uuidv7(madeAt) < uuidv7Floor(t)).toBe(before);
  });

  it('has the form of an id, for any time since the epoch', () => {
    for (const ms of [0, t, 2 ** 48 - 1]) expect(isUuidV7(uuidv7Floor(ms))).toBe(true);
  });
});
