import { crawlTypedValue, toTypedValue } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';

/** R4's integer types and the values each takes (https://hl7.org/fhir/R4/datatypes.html#primitive): 32-bit. */
const RANGES: ReadonlyMap<string, readonly [number, number]> = new Map([
  ['integer', [-2_147_483_648, 2_147_483_647]],
  ['unsignedInt', [0, 2_147_483_647]],
  ['positiveInt', [1, 2_147_483_647]],
]);

/**
 * The paths of a resource's integers (contained resources and extensions too) outside their R4
 * range. Medplum's validator checks only that they are whole: `valueInteger` 1e29 was stored, and
 * every list that held it answered 502 (JavaScript reads it as no safe integer); HAPI refuses it.
 */
export function outOfRangeIntegers(resource: Resource): string[] {
  const found: string[] = [];
  crawlTypedValue(toTypedValue(resource), {
    visitProperty: (_parent, _key, _path, values) => {
      for (const value of values.flat()) {
        const range = RANGES.get(value.type);
        if (range && typeof value.value === 'number' && (value.value < range[0] || value.value > range[1]))
          found.push(value.path);
      }
    },
  });
  return found;
}
