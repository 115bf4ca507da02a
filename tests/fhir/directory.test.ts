import type { Bundle, CapabilityStatement } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';
import { provision, signup } from '../helpers/journey.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * The shared directory set by FHIR_DIRECTORY_TYPES (DESIGN.md section 6: "readable, configurable"):
 * what it names every role reads, what it leaves out no scoped role reads, and /fhir/metadata says so.
 */

const PASSWORD = 'a long and plain passphrase';

async function tokenOf(gw: TestGateway, smtp: SmtpCapture, email: string, role: 'patient' | 'practitioner') {
  const person = await provision(gw, smtp, email, role);
  const response = await signup(gw, { email, access_code: person.code, password: PASSWORD });
  return { fhirId: person.fhirId, token: ((await response.json()) as { token: string }).token };
}

async function create(gw: TestGateway, resource: Record<string, unknown>): Promise<string> {
  const response = await gw.call(`/fhir/${resource.resourceType}`, {
    method: 'POST',
    token: await gw.adminToken(),
    body: JSON.stringify(resource),
    headers: { 'content-type': 'application/fhir+json' },
  });
  expect(response.status).toBe(201);
  return ((await response.json()) as { id: string }).id;
}

const QUESTIONNAIRE = { resourceType: 'Questionnaire', status: 'active', title: 'Intake' };
const ORGANIZATION = { resourceType: 'Organization', name: 'Clinic' };
const LOCATION = { resourceType: 'Location', name: 'Room 1' };

describe.each(UPSTREAMS)('a directory of Organization and Questionnaire, %s upstream', (upstream) => {
  let gw: TestGateway;
  let smtp: SmtpCapture;
  let patient: { fhirId: string; token: string };
  let practitioner: { fhirId: string; token: string };
  let ids: { questionnaire: string; organization: string; location: string };

  const status = async (path: string, token: string) => (await gw.call(path, { token })).status;

  beforeAll(async () => {
    smtp = await startSmtpCapture();
    gw = await startTestGateway({
      upstream,
      env: { SMTP_URL: smtp.url, FHIR_DIRECTORY_TYPES: 'Organization, Questionnaire' },
    });
    const tag = `${upstream}-${Date.now()}`;
    patient = await tokenOf(gw, smtp, `dir-patient-${tag}@example.com`, 'patient');
    practitioner = await tokenOf(gw, smtp, `dir-gp-${tag}@example.com`, 'practitioner');
    ids = {
      questionnaire: await create(gw, QUESTIONNAIRE),
      organization: await create(gw, ORGANIZATION),
      location: await create(gw, LOCATION),
    };
  }, 60_000);

  afterAll(async () => {
    await gw?.close();
    await smtp?.close();
  });

  it('lets a patient and a practitioner read and search the types it names', async () => {
    for (const { token } of [patient, practitioner]) {
      expect(await status(`/fhir/Questionnaire/${ids.questionnaire}`, token)).toBe(200);
      expect(await status(`/fhir/Organization/${ids.organization}`, token)).toBe(200);
      const search = await gw.call(`/fhir/Questionnaire?_id=${ids.questionnaire}`, { token });
      expect(search.status).toBe(200);
      const bundle = (await search.json()) as Bundle;
      expect(bundle.entry?.map((e) => e.resource?.id)).toEqual([ids.questionnaire]);
    }
  });

  it('keeps out a default directory type it leaves out (a read 404s, a search 403s)', async () => {
    for (const { token } of [patient, practitioner]) {
      expect(await status(`/fhir/Location/${ids.location}`, token)).toBe(404);
      expect(await status('/fhir/Location', token)).toBe(403);
      expect(await status('/fhir/Practitioner', token)).toBe(403);
    }
    expect(await status(`/fhir/Practitioner/${practitioner.fhirId}`, patient.token)).toBe(404);
    // an admin's reach is not the directory's
    expect(await status(`/fhir/Location/${ids.location}`, await gw.adminToken())).toBe(200);
  });

  it("leaves a practitioner their own Practitioner record (DESIGN.md section 6), and no other's", async () => {
    const other = await tokenOf(gw, smtp, `dir-gp2-${upstream}-${Date.now()}@example.com`, 'practitioner');
    expect(await status(`/fhir/Practitioner/${practitioner.fhirId}`, practitioner.token)).toBe(200);
    expect(await status(`/fhir/Practitioner/${other.fhirId}`, practitioner.token)).toBe(404);
  });

  it('lists the types it names in /fhir/metadata, and not those it leaves out', async () => {
    const response = await gw.call('/fhir/metadata', { token: patient.token });
    expect(response.status).toBe(200);
    const types = ((await response.json()) as CapabilityStatement).rest?.[0]?.resource?.map((r) => r.type);
    expect(types).toEqual(
      expect.arrayContaining(['Questionnaire', 'Organization', 'Patient', 'Observation']),
    );
    expect(types).not.toContain('Location');
    expect(types).not.toContain('Practitioner');
  });
});

describe('the default directory, embedded upstream', () => {
  let gw: TestGateway;
  let smtp: SmtpCapture;

  beforeAll(async () => {
    smtp = await startSmtpCapture();
    gw = await startTestGateway({ env: { SMTP_URL: smtp.url } });
  });

  afterAll(async () => {
    await gw?.close();
    await smtp?.close();
  });

  it('lets a patient read Location and Practitioner, and not a Questionnaire (not in it)', async () => {
    const patient = await tokenOf(gw, smtp, 'default-dir@example.com', 'patient');
    const gp = await tokenOf(gw, smtp, 'default-dir-gp@example.com', 'practitioner');
    const location = await create(gw, LOCATION);
    const questionnaire = await create(gw, QUESTIONNAIRE);
    expect((await gw.call(`/fhir/Location/${location}`, { token: patient.token })).status).toBe(200);
    expect((await gw.call(`/fhir/Practitioner/${gp.fhirId}`, { token: patient.token })).status).toBe(200);
    expect((await gw.call(`/fhir/Questionnaire/${questionnaire}`, { token: patient.token })).status).toBe(
      404,
    );
    expect((await gw.call('/fhir/Questionnaire', { token: patient.token })).status).toBe(403);
  });

  it('keeps an Endpoint, whose headers may hold credentials, from every role but admins', async () => {
    const patient = await tokenOf(gw, smtp, 'endpoint-reader@example.com', 'patient');
    const endpoint = await create(gw, {
      resourceType: 'Endpoint',
      status: 'active',
      connectionType: {
        system: 'http://terminology.hl7.org/CodeSystem/endpoint-connection-type',
        code: 'hl7-fhir-rest',
      },
      payloadType: [{ text: 'FHIR' }],
      address: 'https://lab.example/fhir',
      header: ['Authorization: Bearer lab-secret'],
    });
    const read = await gw.call(`/fhir/Endpoint/${endpoint}`, { token: patient.token });
    expect(read.status).toBe(404);
    expect(await read.text()).not.toContain('lab-secret');
    expect((await gw.call('/fhir/Endpoint', { token: patient.token })).status).toBe(403);
    expect((await gw.call(`/fhir/Endpoint/${endpoint}`, { token: await gw.adminToken() })).status).toBe(200);
  });
});
