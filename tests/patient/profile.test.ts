import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

/**
 * The gateway's account identifier is its own business, hidden from the slim DTOs also on a record
 * provisioned before PUBLIC_BASE_URL changed (its system names the earlier URL).
 */
describe('GET /patient/profile of a record provisioned under an earlier PUBLIC_BASE_URL', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(() => gw.close());

  it('hides the account identifier and shows the others', async () => {
    const { id } = await gw.deps.fhir.create('Patient', {
      resourceType: 'Patient',
      name: [{ given: ['Ann'], family: 'Earlier' }],
      identifier: [
        { system: 'http://localhost:3000/identifiers/account-email', value: 'ann.earlier@example.com' },
        { system: 'urn:oid:2.16.840.1.113883.19.5', value: 'MRN-7' },
      ],
    });
    const patient = await gw.seedUser({ role: 'patient', fhirId: id, email: 'ann.earlier@example.com' });
    const token = await gw.login(patient.email, patient.password);
    const profile = await gw.call('/patient/profile', { token });
    expect(profile.status).toBe(200);
    expect(((await profile.json()) as { identifiers: unknown[] }).identifiers).toEqual([
      { system: 'urn:oid:2.16.840.1.113883.19.5', value: 'MRN-7' },
    ]);
  });
});
