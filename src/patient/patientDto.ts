import type { Patient } from '@medplum/fhirtypes';

/** Patient -> plain DTO: names, contact, demographics; no FHIR shapes. */
export interface PatientDto {
  id: string;
  name: string;
  given: string[];
  family: string | null;
  birth_date: string | null;
  gender: string | null;
  email: string | null;
  phone: string | null;
  address: {
    line: string[];
    city: string | null;
    state: string | null;
    postal_code: string | null;
    country: string | null;
  } | null;
  identifiers: { system: string | null; value: string | null }[];
}

/** `hidesIdentifier` names the identifier systems a frontend must not see (the gateway's own). */
export function toPatientDto(
  patient: Patient,
  hidesIdentifier: (system: string | undefined) => boolean,
): PatientDto {
  const name = patient.name?.find((n) => n.use === 'official') ?? patient.name?.[0];
  const address = patient.address?.[0];
  return {
    id: patient.id ?? '',
    name: name?.text ?? [...(name?.given ?? []), name?.family].filter(Boolean).join(' '),
    given: name?.given ?? [],
    family: name?.family ?? null,
    birth_date: patient.birthDate ?? null,
    gender: patient.gender ?? null,
    email: patient.telecom?.find((t) => t.system === 'email')?.value ?? null,
    phone: patient.telecom?.find((t) => t.system === 'phone')?.value ?? null,
    address: address
      ? {
          line: address.line ?? [],
          city: address.city ?? null,
          state: address.state ?? null,
          postal_code: address.postalCode ?? null,
          country: address.country ?? null,
        }
      : null,
    identifiers: (patient.identifier ?? [])
      .filter((i) => !hidesIdentifier(i.system))
      .map((i) => ({ system: i.system ?? null, value: i.value ?? null })),
  };
}
