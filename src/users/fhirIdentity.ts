import type { Role, UserRow } from '../../db/schema.js';

/** The FHIR resource type an account of each role is linked to (admins have none). */
export const FHIR_TYPE_BY_ROLE = {
  admin: null,
  patient: 'Patient',
  practitioner: 'Practitioner',
} as const satisfies Record<Role, 'Patient' | 'Practitioner' | null>;

/** The role of the accounts a FHIR resource type is linked to: the inverse of FHIR_TYPE_BY_ROLE. */
export const ROLE_BY_FHIR_TYPE = {
  Patient: 'patient',
  Practitioner: 'practitioner',
} as const satisfies Record<'Patient' | 'Practitioner', Role>;

/** The role linked to `type`, or undefined for a type no account is linked to. */
export function roleLinkedTo(type: string): Exclude<Role, 'admin'> | undefined {
  return Object.hasOwn(ROLE_BY_FHIR_TYPE, type)
    ? ROLE_BY_FHIR_TYPE[type as keyof typeof ROLE_BY_FHIR_TYPE]
    : undefined;
}

/** `Patient/123` for a linked account, null otherwise. */
export function fhirReferenceOf(user: Pick<UserRow, 'role' | 'fhir_resource_id'>): string | null {
  const type = FHIR_TYPE_BY_ROLE[user.role];
  return type && user.fhir_resource_id ? `${type}/${user.fhir_resource_id}` : null;
}

const ACCOUNT_IDENTIFIER_PATH = '/identifiers/account-email';

/** The identifier the gateway assigns: conditional create on it makes a retry find, not duplicate. */
export function accountIdentifierSystem(publicBaseUrl: string): string {
  return `${publicBaseUrl}${ACCOUNT_IDENTIFIER_PATH}`;
}

/**
 * Whether `system` is the gateway's account identifier under any PUBLIC_BASE_URL, today's or an
 * earlier one: records provisioned before a change of URL keep the system they were given.
 */
export function isAccountIdentifierSystem(system: string | undefined): boolean {
  return system?.endsWith(ACCOUNT_IDENTIFIER_PATH) ?? false;
}
