import type { Patient } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { toPatientDto } from '../../src/patient/patientDto.js';
import { accountIdentifierSystem, isAccountIdentifierSystem } from '../../src/users/fhirIdentity.js';

describe("a Patient DTO's identifiers", () => {
  it.each([
    ['the account identifier of today', accountIdentifierSystem('https://gw.example'), false],
    // records provisioned before a change of PUBLIC_BASE_URL keep the system they were given
    [
      'the account identifier under an earlier base URL',
      'http://localhost:3000/identifiers/account-email',
      false,
    ],
    ['a medical record number', 'urn:oid:2.16.840.1.113883.19.5', true],
    ['an identifier that only mentions the path', 'https://x.example/identifiers/account-email/v2', true],
    ['an identifier without a system', undefined, true],
  ])('%s: shown %s', (_what, system, shown) => {
    const patient: Patient = {
      resourceType: 'Patient',
      id: 'p1',
      identifier: [{ ...(system === undefined ? {} : { system }), value: 'ann@example.com' }],
    };
    const dto = toPatientDto(patient, isAccountIdentifierSystem);
    expect(dto.identifiers).toEqual(shown ? [{ system: system ?? null, value: 'ann@example.com' }] : []);
  });
});
