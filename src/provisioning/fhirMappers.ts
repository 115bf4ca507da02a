import type { Address, ContactPoint, HumanName, Identifier, Patient, Practitioner } from '@medplum/fhirtypes';
import type { CreatePatientInput, CreatePractitionerInput } from './provisioningSchemas.js';

/** Pure DTO -> FHIR R4 mappers for the slim provisioning endpoints. */

const asArray = <T>(value: T | T[] | undefined): T[] =>
  value === undefined ? [] : Array.isArray(value) ? value : [value];

function humanName(name: CreatePatientInput['name']): HumanName {
  if (typeof name === 'string') {
    const parts = name.trim().split(/\s+/);
    return parts.length > 1
      ? { use: 'official', text: name.trim(), family: parts.at(-1), given: parts.slice(0, -1) }
      : { use: 'official', text: name.trim(), family: name.trim() };
  }
  const given = asArray(name.given);
  return { use: 'official', family: name.family, ...(given.length ? { given } : {}) };
}

function telecom(email: string, phone: string | undefined): ContactPoint[] {
  return [{ system: 'email', value: email }, ...(phone ? [{ system: 'phone' as const, value: phone }] : [])];
}

function address(input: NonNullable<CreatePatientInput['address']>): Address {
  const lines = asArray(input.line);
  return {
    ...(lines.length ? { line: lines } : {}),
    ...(input.city ? { city: input.city } : {}),
    ...(input.state ? { state: input.state } : {}),
    ...(input.postal_code ? { postalCode: input.postal_code } : {}),
    ...(input.country ? { country: input.country } : {}),
  };
}

function identifiers(input: CreatePatientInput['identifier']): Identifier[] {
  return asArray(input).map((i) => ({ system: i.system, value: i.value }));
}

export function patientFromDto(input: CreatePatientInput, email: string): Patient {
  const ids = identifiers(input.identifier);
  return {
    resourceType: 'Patient',
    active: true,
    name: [humanName(input.name)],
    telecom: telecom(email, input.phone),
    birthDate: input.dob,
    ...(input.gender ? { gender: input.gender } : {}),
    ...(input.address ? { address: [address(input.address)] } : {}),
    ...(ids.length ? { identifier: ids } : {}),
    ...(input.general_practitioner_id
      ? { generalPractitioner: [{ reference: `Practitioner/${input.general_practitioner_id}` }] }
      : {}),
  };
}

export function practitionerFromDto(input: CreatePractitionerInput, email: string): Practitioner {
  const ids = identifiers(input.identifier);
  const qualifications = asArray(input.qualification).map((q) =>
    typeof q === 'string'
      ? { code: { text: q } }
      : {
          code: {
            coding: [
              {
                ...(q.system ? { system: q.system } : {}),
                code: q.code,
                ...(q.display ? { display: q.display } : {}),
              },
            ],
            ...(q.display ? { text: q.display } : {}),
          },
        },
  );
  return {
    resourceType: 'Practitioner',
    active: true,
    name: [humanName(input.name)],
    telecom: telecom(email, input.phone),
    ...(ids.length ? { identifier: ids } : {}),
    ...(qualifications.length ? { qualification: qualifications } : {}),
  };
}

/** The person's display name for mails, from a FHIR resource. */
export function displayName(resource: Patient | Practitioner): string {
  const name = resource.name?.[0];
  if (!name) return '';
  return name.text ?? [...(name.given ?? []), name.family].filter(Boolean).join(' ');
}

/** The one email telecom of a (validated) resource. */
export function emailOf(resource: Patient | Practitioner): string | undefined {
  return resource.telecom?.find((t) => t.system === 'email')?.value;
}
