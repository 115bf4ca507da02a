import type { Observation } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { toObservationDto } from '../../src/patient/observationDto.js';
import { ObservationDtoSchema } from '../../src/patient/patientSchemas.js';

/** Every R4 value type a frontend meets comes out as a plain value, never a silent null. */
const observation = (fields: Partial<Observation>): Observation => ({
  resourceType: 'Observation',
  id: 'o1',
  status: 'final',
  code: { text: 'Test' },
  ...fields,
});

describe('toObservationDto', () => {
  it.each([
    [
      'a quantity',
      {
        valueQuantity: { value: 72, unit: 'beats/minute', system: 'http://unitsofmeasure.org', code: '/min' },
      },
      {
        type: 'quantity',
        comparator: null,
        value: 72,
        unit: 'beats/minute',
        system: 'http://unitsofmeasure.org',
        code: '/min',
      },
    ],
    [
      // a modifier: "<0.01 ng/mL" shown as 0.01 ng/mL is another result (review S3)
      'a quantity with a comparator',
      {
        valueQuantity: {
          value: 0.01,
          comparator: '<',
          unit: 'ng/mL',
          system: 'http://unitsofmeasure.org',
          code: 'ng/mL',
        },
      },
      {
        type: 'quantity',
        comparator: '<',
        value: 0.01,
        unit: 'ng/mL',
        system: 'http://unitsofmeasure.org',
        code: 'ng/mL',
      },
    ],
    ['a string', { valueString: 'clear' }, { type: 'string', value: 'clear' }],
    ['a boolean', { valueBoolean: false }, { type: 'boolean', value: false }],
    ['an integer', { valueInteger: 0 }, { type: 'integer', value: 0 }],
    [
      'a coded value',
      {
        valueCodeableConcept: {
          coding: [{ system: 'http://snomed.info/sct', code: '260385009', display: 'Negative' }],
        },
      },
      { type: 'coded', system: 'http://snomed.info/sct', code: '260385009', display: 'Negative' },
    ],
    [
      'a date-time',
      { valueDateTime: '2026-11-20T09:30:00Z' },
      { type: 'datetime', value: '2026-11-20T09:30:00Z' },
    ],
    ['a time', { valueTime: '07:30:00' }, { type: 'time', value: '07:30:00' }],
    [
      'a period',
      { valuePeriod: { start: '2026-11-20T22:00:00Z' } },
      { type: 'period', start: '2026-11-20T22:00:00Z', end: null },
    ],
    [
      'a range',
      { valueRange: { low: { value: 2, unit: 'mmol/L' }, high: { value: 4, unit: 'mmol/L' } } },
      {
        type: 'range',
        low: { comparator: null, value: 2, unit: 'mmol/L' },
        high: { comparator: null, value: 4, unit: 'mmol/L' },
      },
    ],
    [
      'a ratio (a 1:128 titer)',
      { valueRatio: { numerator: { value: 1 }, denominator: { value: 128 } } },
      {
        type: 'ratio',
        numerator: { comparator: null, value: 1, unit: null },
        denominator: { comparator: null, value: 128, unit: null },
      },
    ],
    [
      'a ratio with a comparator (a titer of at least 1:64)',
      { valueRatio: { numerator: { value: 1, comparator: '>=' }, denominator: { value: 64 } } },
      {
        type: 'ratio',
        numerator: { comparator: '>=', value: 1, unit: null },
        denominator: { comparator: null, value: 64, unit: null },
      },
    ],
    [
      'no value, and why',
      {
        dataAbsentReason: {
          coding: [
            {
              system: 'http://terminology.hl7.org/CodeSystem/data-absent-reason',
              code: 'not-performed',
              display: 'Not Performed',
            },
          ],
        },
      },
      {
        type: 'absent',
        system: 'http://terminology.hl7.org/CodeSystem/data-absent-reason',
        code: 'not-performed',
        display: 'Not Performed',
      },
    ],
    ['no value at all (a panel)', {}, null],
  ] as const)('carries %s, as /openapi.json describes it', (_what, fields, value) => {
    const dto = toObservationDto(observation(fields as Partial<Observation>));
    expect(dto.value).toEqual(value);
    expect(ObservationDtoSchema.safeParse(dto).success).toBe(true);
  });

  it('carries a component that has no value, and why', () => {
    const dto = toObservationDto(
      observation({
        component: [{ code: { text: 'Diastolic' }, dataAbsentReason: { text: 'Patient refused' } }],
      }),
    );
    expect(dto.components[0]?.value).toEqual({
      type: 'absent',
      system: null,
      code: null,
      display: 'Patient refused',
    });
  });
});
