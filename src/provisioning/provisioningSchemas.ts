import { z } from '@hono/zod-openapi';
import { FHIR_ID_PATTERN, line, NewEmailSchema, PhoneSchema } from '../http/schemas.js';

/** Request and response bodies of POST /fhir/patient and /fhir/practitioner. Unknown fields are refused. */

const NameSchema = z
  .union(
    [
      line(200).openapi({ description: 'The full name as one text', example: 'Ann Lee' }),
      z
        .object({
          given: z.union([line(100), z.array(line(100)).min(1).max(5)]).optional(),
          family: line(100),
        })
        .strict(),
    ],
    { error: 'must be one line of text, or {given, family} with a family name' },
  )
  .openapi({
    description: 'A single text, or `{given, family}`',
    example: { given: ['Ann'], family: 'Lee' },
  });

const IdentifierSchema = z
  .object({
    system: z.url().max(255).openapi({ example: 'urn:oid:2.16.840.1.113883.4.1' }),
    value: line(100).openapi({ example: 'MRN-0042' }),
  })
  .strict();

const AddressSchema = z
  .object({
    line: z.union([line(200), z.array(line(200)).min(1).max(4)]).optional(),
    city: line(100).optional(),
    state: line(100).optional(),
    postal_code: line(20).optional(),
    country: line(100).optional(),
  })
  .strict()
  // FHIR refuses an element with nothing in it (ele-1): say so on the DTO's own field
  .refine((address) => Object.keys(address).length > 0, 'must have at least one field')
  .openapi({
    minProperties: 1,
    example: { line: ['1 Main St'], city: 'Springfield', postal_code: '12345', country: 'US' },
  });

/** The earliest time zone's lead on UTC (UTC+14, Kiribati): where a calendar day begins first. */
const EARLIEST_ZONE_LEAD_MS = 14 * 3_600_000;

/**
 * A FHIR date (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`) that is on the calendar and has begun: R4's
 * pattern alone takes 2026-02-30 and next year (review F). Also the raw create's birthDate check.
 */
export function isPastFhirDate(value: string, now: number = Date.now()): boolean {
  if (!/^\d{4}(?:-\d{2}(?:-\d{2})?)?$/.test(value)) return false;
  const full = value.length === 4 ? `${value}-01-01` : value.length === 7 ? `${value}-01` : value;
  return isPastCalendarDate(full, now);
}

/**
 * A `YYYY-MM-DD` on the calendar that has begun somewhere: a date carries no time zone, and a
 * newborn registered on the local date east of UTC (Sydney's morning is UTC's yesterday) was
 * refused as born in the future.
 */
export function isPastCalendarDate(value: string, now: number = Date.now()): boolean {
  const date = new Date(`${value}T00:00:00Z`);
  return (
    // FHIR dates start at year 0001
    !value.startsWith('0000') &&
    !Number.isNaN(date.getTime()) &&
    date.toISOString().startsWith(value) &&
    date.getTime() - EARLIEST_ZONE_LEAD_MS <= now
  );
}

export const CreatePatientBody = z
  .object({
    name: NameSchema,
    email: NewEmailSchema,
    dob: z
      .string()
      .regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date YYYY-MM-DD')
      .refine((value) => isPastCalendarDate(value), 'must be a real date, not in the future')
      .openapi({ example: '1980-04-12' }),
    gender: z.enum(['male', 'female', 'other', 'unknown']).optional(),
    phone: PhoneSchema.optional(),
    address: AddressSchema.optional(),
    identifier: z.union([IdentifierSchema, z.array(IdentifierSchema).min(1).max(5)]).optional(),
    general_practitioner_id: z
      .string()
      .regex(FHIR_ID_PATTERN, 'must be a FHIR id')
      .optional()
      .openapi({ description: 'An existing Practitioner id: assigns the patient to them' }),
  })
  .strict()
  .openapi('CreatePatientRequest');

const QualificationSchema = z.union([
  line(200).openapi({ description: 'Free text, e.g. "MD"' }),
  z
    .object({
      code: line(100),
      display: line(200).optional(),
      system: z.url().max(255).optional(),
    })
    .strict(),
]);

export const CreatePractitionerBody = z
  .object({
    name: NameSchema,
    email: NewEmailSchema,
    phone: PhoneSchema.optional(),
    identifier: z
      .union([IdentifierSchema, z.array(IdentifierSchema).min(1).max(5)])
      .optional()
      .openapi({ example: { system: 'http://hl7.org/fhir/sid/us-npi', value: '1234567893' } }),
    qualification: z.union([QualificationSchema, z.array(QualificationSchema).min(1).max(10)]).optional(),
  })
  .strict()
  .openapi('CreatePractitionerRequest');

export const ProvisionedResponse = z
  .object({
    fhir_id: z.string().openapi({ example: 'f3c1a9e2-4b7d-4c11-9a55-0c2d6e8f1a23' }),
    user_id: z.string().openapi({ example: '019a6b3e-6c1f-7b52-9d8e-2f4a1c3b5d7e' }),
    message: z
      .string()
      .openapi({ example: 'Patient created. An access code was emailed to ann@example.com.' }),
  })
  .openapi('ProvisionedResponse');

export type CreatePatientInput = z.infer<typeof CreatePatientBody>;
export type CreatePractitionerInput = z.infer<typeof CreatePractitionerBody>;
