import { describe, expect, it } from 'vitest';
import { isPastCalendarDate, isPastFhirDate } from '../../src/provisioning/provisioningSchemas.js';

/** A birth date is a date that has begun somewhere on Earth: the earliest zone is UTC+14. */
describe('isPastFhirDate', () => {
  // 10:00 UTC on 6 December 2026: already 7 December from UTC+14 (00:00), not yet 8 December anywhere
  const now = Date.parse('2026-12-06T10:00:00Z');

  it.each([
    ['1980', true],
    ['1980-04', true],
    ['1980-04-12', true],
    ['2026-12-06', true],
    ['2026-12-07', true],
    ['2026-12-08', false],
    ['2027', false],
    ['2027-01', false],
    ['2026-02-30', false],
    ['2026-13', false],
    ['0000-01-01', false],
    ['1980-4-12', false],
    ['', false],
  ])('takes %s as a date that has begun: %s', (value, expected) => {
    expect(isPastFhirDate(value, now)).toBe(expected);
  });

  it('takes next year once its first day has begun in the earliest zone', () => {
    expect(isPastFhirDate('2027', Date.parse('2026-12-31T09:59:59Z'))).toBe(false);
    expect(isPastFhirDate('2027', Date.parse('2026-12-31T10:00:00Z'))).toBe(true);
  });

  it('holds the slim dob to the same rule', () => {
    expect(isPastCalendarDate('2026-12-07', now)).toBe(true);
    expect(isPastCalendarDate('2026-12-08', now)).toBe(false);
  });
});
