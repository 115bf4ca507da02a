import { describe, expect, it } from 'vitest';
import { isOnCalendar } from '../../src/fhir/embedded/calendarDates.js';

describe('isOnCalendar', () => {
  it.each([
    ['2026-02-28', true],
    ['2026-02-29', false],
    ['2024-02-29', true],
    ['2000-02-29', true],
    ['1900-02-29', false],
    ['2026-04-30', true],
    ['2026-04-31', false],
    ['2026-12-31T23:59:59Z', true],
    ['2026-02-30T01:02:03+01:00', false],
    ['2026-00-10', false],
    ['2026-01-00', false],
    ['2026', true],
    ['2026-02', true],
  ])('%s: %s', (value, expected) => {
    expect(isOnCalendar(value)).toBe(expected);
  });
});
