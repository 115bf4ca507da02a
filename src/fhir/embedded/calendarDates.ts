import { crawlTypedValue, toTypedValue } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';

/** The FHIR types whose values name a day. */
const DATED_TYPES: ReadonlySet<string> = new Set(['date', 'dateTime', 'instant']);

/**
 * Whether the day a FHIR date, dateTime or instant names exists: R4's pattern (which Medplum's
 * validator checks) takes any day 01-31 in any month, so `2026-02-30` and `2026-04-31` passed
 * and were stored (review F; real HAPI refuses them). A value without a day (`2026`, `2026-02`)
 * names no day to check.
 */
export function isOnCalendar(value: string): boolean {
  const day = /^(\d{4})-(\d{2})-(\d{2})/.exec(value);
  if (!day) return true;
  const [year, month, date] = [Number(day[1]), Number(day[2]), Number(day[3])];
  // day 0 of the next month is the last day of this one (UTC: no time zone moves it)
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  return month >= 1 && month <= 12 && date >= 1 && date <= daysInMonth;
}

/** The paths of a resource's dates (contained resources and extensions too) that name no day on the calendar. */
export function impossibleDates(resource: Resource): string[] {
  const found: string[] = [];
  crawlTypedValue(toTypedValue(resource), {
    visitProperty: (_parent, _key, _path, values) => {
      for (const value of values.flat()) {
        if (DATED_TYPES.has(value.type) && typeof value.value === 'string' && !isOnCalendar(value.value))
          found.push(value.path);
      }
    },
  });
  return found;
}
