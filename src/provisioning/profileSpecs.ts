import { NEW_ADDRESS_SOURCE } from '../email/address.js';

/**
 * What the gateway requires of a Patient or Practitioner beyond base R4, as FHIRPath
 * invariants (https://hl7.org/fhir/R4/conformance-rules.html#constraints). The
 * StructureDefinitions in fhir-profiles/ are generated from these by scripts/buildProfiles.ts.
 */

const PROFILE_BASE = 'https://fhir-facade.dev/fhir/StructureDefinition';

/** `text` as a FHIRPath string literal (https://hl7.org/fhirpath/N1/#string): `\` and `'` escaped. */
function fhirPathString(text: string): string {
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

// one plain address, exactly what the mailer sends to (src/email/address.ts): no display names,
// lists or line breaks that could add mail recipients or headers
const EMAIL_PATTERN = fhirPathString(NEW_ADDRESS_SOURCE);

const emailConstraints = [
  {
    key: 'ff-email-1',
    field: 'telecom',
    human: 'Exactly one telecom with system = email is required (the account is bound to it)',
    expression: "telecom.where(system = 'email').count() = 1",
  },
  {
    key: 'ff-email-2',
    field: 'telecom',
    human: 'The email telecom must hold a single plain email address',
    expression: `telecom.where(system = 'email').all(value.exists() and value.matches(${EMAIL_PATTERN}))`,
  },
  {
    key: 'ff-name-1',
    field: 'name',
    human: 'A name with a family name or text is required',
    expression: 'name.where(family.exists() or text.exists()).exists()',
  },
];

export const PROFILE_SPECS = [
  {
    id: 'ff-patient',
    type: 'Patient',
    url: `${PROFILE_BASE}/ff-patient`,
    name: 'FhirFacadePatient',
    title: 'Patient accepted by fhir-facade',
    description: 'R4 Patient with exactly one email telecom (the login address) and a name.',
    constraints: [
      ...emailConstraints,
      {
        key: 'ff-gender-1',
        field: 'gender',
        human: 'gender must be one of male, female, other, unknown',
        expression: "gender.empty() or gender in ('male' | 'female' | 'other' | 'unknown')",
      },
    ],
  },
  {
    id: 'ff-practitioner',
    type: 'Practitioner',
    url: `${PROFILE_BASE}/ff-practitioner`,
    name: 'FhirFacadePractitioner',
    title: 'Practitioner accepted by fhir-facade',
    description: 'R4 Practitioner with exactly one email telecom (the login address) and a name.',
    constraints: emailConstraints,
  },
] as const;

/** The field each of our invariants is about, so a 400 names the field at fault. */
export const CONSTRAINT_FIELDS: ReadonlyMap<string, string> = new Map(
  PROFILE_SPECS.flatMap((spec) => spec.constraints.map((c) => [c.key, c.field] as const)),
);
