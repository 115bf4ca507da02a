import type { Role, UserRow } from '../../db/schema.js';

/** The FHIR resource type an account of each role is linked to (admins have none). */
export const FHIR_TYPE_BY_ROLE = {
  admin: null,
  patient: 'Patient',
  practitioner: 'Practitioner',
} as const satisfies Record<Role, 'Patient' | 'Practitioner' | null>;

/** `Patient/123` for a linked account, null otherwise. */
export function fhirReferenceOf(user: Pick<UserRow, 'role' | 'fhir_resource_id'>): string | null {
  const type = FHIR_TYPE_BY_ROLE[user.role];
  return type && user.fhir_resource_id ? `${type}/${user.fhir_resource_id}` : null;
}
