import { z } from '@hono/zod-openapi';
import { pageLimit } from '../http/schemas.js';

/** Schemas of the patient and practitioner read endpoints (validate queries, describe /openapi.json). */

const Code = z
  .object({ system: z.string().nullable(), code: z.string().nullable(), display: z.string().nullable() })
  .openapi('Code', { example: { system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' } });

/** FHIR's Quantity.comparator, a modifier: "<0.01 ng/mL" is not 0.01 ng/mL. */
const Comparator = z.string().nullable().openapi({
  description: 'How to read the value: <, <=, >=, > or ad (sufficient to achieve); null: as it is',
});

const QuantityValue = z.object({
  comparator: Comparator,
  value: z.number().nullable(),
  unit: z.string().nullable(),
});

const Value = z
  .discriminatedUnion('type', [
    z.object({
      type: z.literal('quantity'),
      comparator: Comparator,
      value: z.number().nullable(),
      unit: z.string().nullable(),
      system: z.string().nullable(),
      code: z.string().nullable(),
    }),
    z.object({ type: z.literal('string'), value: z.string() }),
    z.object({ type: z.literal('boolean'), value: z.boolean() }),
    z.object({ type: z.literal('integer'), value: z.number().int() }),
    z.object({
      type: z.literal('coded'),
      system: z.string().nullable(),
      code: z.string().nullable(),
      display: z.string().nullable(),
    }),
    z.object({ type: z.literal('datetime'), value: z.string() }),
    z.object({ type: z.literal('time'), value: z.string() }),
    z.object({ type: z.literal('period'), start: z.string().nullable(), end: z.string().nullable() }),
    z.object({ type: z.literal('range'), low: QuantityValue.nullable(), high: QuantityValue.nullable() }),
    z.object({
      type: z.literal('ratio'),
      numerator: QuantityValue.nullable(),
      denominator: QuantityValue.nullable(),
    }),
    z
      .object({
        type: z.literal('absent'),
        system: z.string().nullable(),
        code: z.string().nullable(),
        display: z.string().nullable(),
      })
      .openapi({ description: 'No value, and why (the FHIR dataAbsentReason), e.g. "Not Performed"' }),
  ])
  .openapi('ObservationValue');

export const ObservationDtoSchema = z
  .object({
    id: z.string(),
    status: z.string().openapi({ example: 'final' }),
    category: z.array(Code),
    code: Code,
    value: Value.nullable(),
    components: z
      .array(z.object({ code: Code, value: Value.nullable() }))
      .openapi({ description: 'Panels, e.g. blood pressure' }),
    effective: z.string().nullable().openapi({ example: '2026-11-20T09:30:00Z' }),
    issued: z.string().nullable(),
    interpretation: z.array(Code),
    reference_range: z.array(
      z.object({
        low: QuantityValue.nullable(),
        high: QuantityValue.nullable(),
        text: z.string().nullable(),
      }),
    ),
  })
  .openapi('Observation');

export const ObservationPage = z
  .object({ observations: z.array(ObservationDtoSchema), next_cursor: z.string().nullable() })
  .openapi('ObservationPage');

export const PatientDtoSchema = z
  .object({
    id: z.string(),
    name: z.string().openapi({ example: 'Ann Lee' }),
    given: z.array(z.string()),
    family: z.string().nullable(),
    birth_date: z.string().nullable().openapi({ example: '1980-04-12' }),
    gender: z.string().nullable(),
    email: z.string().nullable(),
    phone: z.string().nullable(),
    address: z
      .object({
        line: z.array(z.string()),
        city: z.string().nullable(),
        state: z.string().nullable(),
        postal_code: z.string().nullable(),
        country: z.string().nullable(),
      })
      .nullable(),
    identifiers: z.array(z.object({ system: z.string().nullable(), value: z.string().nullable() })),
  })
  .openapi('PatientProfile');

/** A real calendar date or date-time: the shape alone would let `2026-99-99` through to the FHIR server. */
function isRealDateTime(value: string): boolean {
  // FHIR dates start at year 0001 (the FHIR server refuses 0000: a 502 for a bad filter)
  if (value.startsWith('0000')) return false;
  const date = value.slice(0, 10);
  const midnight = Date.parse(`${date}T00:00:00Z`);
  const realDate = !Number.isNaN(midnight) && new Date(midnight).toISOString().startsWith(date);
  return realDate && !Number.isNaN(Date.parse(value));
}

const dateOrDateTime = z
  .string()
  .regex(
    // a FHIR dateTime: seconds and a zone required, hours 00-23 (the FHIR server refuses
    // `T10:00Z` and `T24:00:00`, which would be a 502 for a bad filter)
    /^\d{4}-\d{2}-\d{2}(T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?(Z|[+-](0\d|1[0-4]):[0-5]\d))?$/,
    'must be YYYY-MM-DD or a FHIR date-time (YYYY-MM-DDThh:mm:ss with Z or +hh:mm)',
  )
  .refine(isRealDateTime, 'must be a real date');
const token = z
  .string()
  .max(200)
  .regex(/^[^,|\s]*(\|[^,|\s]+)?$/, 'must be code or system|code');

export const ObservationQuery = z
  .object({
    code: token.optional().openapi({ description: 'A code, or system|code (e.g. http://loinc.org|8867-4)' }),
    category: token.optional().openapi({ description: 'e.g. vital-signs, laboratory' }),
    from: dateOrDateTime.optional().openapi({ description: 'Effective on or after' }),
    to: dateOrDateTime.optional().openapi({ description: 'Effective on or before' }),
    limit: pageLimit(100, 20),
    cursor: z.string().max(4096).optional().openapi({ description: 'next_cursor of the previous page' }),
  })
  .strict();

export const PageQuery = z
  .object({
    limit: pageLimit(100, 20),
    cursor: z.string().max(4096).optional(),
  })
  .strict();
