import type { Patient, Practitioner } from '@medplum/fhirtypes';
import type { Role, UserRow } from '../../db/schema.js';
import type { AppDeps } from '../http/types.js';
import { displayName } from '../provisioning/fhirMappers.js';

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

/** The person's name from their FHIR record, for a mail greeting; '' when it cannot be had (the mail still goes). */
export async function nameFromFhir(
  deps: AppDeps,
  user: Pick<UserRow, 'role' | 'fhir_resource_id'>,
): Promise<string> {
  const type = FHIR_TYPE_BY_ROLE[user.role];
  if (!type || !user.fhir_resource_id) return '';
  try {
    const { body } = await deps.fhir.read<Patient | Practitioner>(type, user.fhir_resource_id);
    return body ? displayName(body) : '';
  } catch {
    return '';
  }
}
