import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildProfile, profileFile } from '../../scripts/buildProfiles.js';
import { AppError } from '../../src/errors.js';
import { validateProvisionedResource } from '../../src/provisioning/fhirValidation.js';
import { PROFILE_SPECS } from '../../src/provisioning/profileSpecs.js';

async function errorsOf(type: 'Patient' | 'Practitioner', resource: unknown) {
  try {
    await validateProvisionedResource(type, resource);
    return [];
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    return (error as AppError).errors?.map((e) => e.path) ?? [];
  }
}

const email = [{ system: 'email', value: 'ann@example.com' }];

describe('fhir-profiles', () => {
  it('are exactly what scripts/buildProfiles.ts generates from the R4 definitions', () => {
    for (const spec of PROFILE_SPECS) {
      expect(JSON.parse(fs.readFileSync(profileFile(spec.id), 'utf8'))).toEqual(buildProfile(spec));
    }
  });

  it('accept a minimal Patient and Practitioner with a name and one email', async () => {
    expect(
      await errorsOf('Patient', { resourceType: 'Patient', name: [{ family: 'Lee' }], telecom: email }),
    ).toEqual([]);
    expect(
      await errorsOf('Practitioner', {
        resourceType: 'Practitioner',
        name: [{ text: 'Dr Lee' }],
        telecom: email,
      }),
    ).toEqual([]);
  });

  it.each([
    ['no email telecom', { name: [{ family: 'Lee' }] }, 'telecom'],
    [
      'two email telecoms',
      { name: [{ family: 'Lee' }], telecom: [...email, { system: 'email', value: 'b@example.com' }] },
      'telecom',
    ],
    [
      'an email with CRLF',
      { name: [{ family: 'Lee' }], telecom: [{ system: 'email', value: 'a@example.com\r\nBcc: b@x.io' }] },
      'telecom',
    ],
    [
      'an address list',
      { name: [{ family: 'Lee' }], telecom: [{ system: 'email', value: 'a@example.com, b@x.io' }] },
      'telecom',
    ],
    ['no name', { telecom: email }, 'name'],
    ['a gender outside R4', { name: [{ family: 'Lee' }], telecom: email, gender: 'banana' }, 'gender'],
    [
      'a malformed birthDate',
      { name: [{ family: 'Lee' }], telecom: email, birthDate: '1980-13-45' },
      'Patient.birthDate',
    ],
    // R4's pattern takes these; the slim dob's rule does not (review F)
    [
      'a birthDate not on the calendar',
      { name: [{ family: 'Lee' }], telecom: email, birthDate: '2026-02-30' },
      'Patient.birthDate',
    ],
    [
      'a birthDate in the future',
      { name: [{ family: 'Lee' }], telecom: email, birthDate: '2999' },
      'Patient.birthDate',
    ],
    [
      'an email whose local part is over 64 characters',
      { name: [{ family: 'Lee' }], telecom: [{ system: 'email', value: `${'a'.repeat(65)}@example.com` }] },
      'telecom',
    ],
    [
      'an unknown property',
      { name: [{ family: 'Lee' }], telecom: email, favouriteColour: 'blue' },
      'Patient.favouriteColour',
    ],
  ])('refuse a Patient with %s, naming the field', async (_label, fields, path) => {
    expect(await errorsOf('Patient', { resourceType: 'Patient', ...fields })).toContain(path);
  });

  it.each(['1980', '1980-04', '1980-04-12'])(
    'accept a partial or whole past birthDate %s, as FHIR does',
    async (birthDate) => {
      expect(
        await errorsOf('Patient', {
          resourceType: 'Patient',
          name: [{ family: 'Lee' }],
          telecom: email,
          birthDate,
        }),
      ).toEqual([]);
    },
  );

  it('refuse a resource of another type', async () => {
    expect(await errorsOf('Patient', { resourceType: 'Practitioner', telecom: email })).toEqual([
      'resourceType',
    ]);
  });
});
