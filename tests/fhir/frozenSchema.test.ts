import fs from 'node:fs';
import path from 'node:path';
import { getAllDataTypes } from '@medplum/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadFhirDefinitions } from '../../src/fhir/definitions.js';
import { startTestGateway, type TestGateway, USER_PASSWORD } from '../helpers/gateway.js';
import { CODE_PATTERN } from '../helpers/journey.js';

// The build saves equal small parts of the R4 schema once (scripts/slimDefinitions.mjs,
// shareEqualParts): the same `ele-1` constraint object then sits on thousands of elements, so a
// write to one would change them all. This file freezes everything the saved types hold, in this
// process only (the schema is process-wide, each test file has its own), and walks what reads the
// schema: profile validation of provisioning, the embedded server's validation, search, includes,
// `_elements` and `_summary`, history, and the passthrough's compartment checks. A write anywhere
// in them throws a TypeError (strict mode): the gateway then answers 500 and the embedded server's
// router 400, so every answer is checked for its own status and, for a refusal, its own reason.

/** Freezes every array and plain object under the types (not the map of types: core adds profiles to it). */
function freezeTypes(): number {
  let frozen = 0;
  const pending: object[] = Object.values(getAllDataTypes());
  const seen = new Set<object>();
  while (pending.length > 0) {
    const value = pending.pop() as object;
    if (seen.has(value)) continue;
    seen.add(value);
    for (const member of Object.values(value))
      if (typeof member === 'object' && member !== null) pending.push(member);
    if (value instanceof Set || value instanceof Map) continue;
    Object.freeze(value);
    frozen++;
  }
  return frozen;
}

/** The access code in the mail to `email` that the file outbox wrote (DATA_DIR/mail). */
async function codeMailedTo(dataDir: string, email: string): Promise<string> {
  const dir = path.join(dataDir, 'mail');
  for (let tries = 0; tries < 100; tries++) {
    for (const file of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
      const text = fs.readFileSync(path.join(dir, file), 'utf8');
      const code = text.includes(email) ? CODE_PATTERN.exec(text)?.[0] : undefined;
      if (code) return code;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`no mail to ${email}`);
}

const JSON_FHIR = { 'content-type': 'application/fhir+json' };

describe('the R4 schema, frozen, serves every reading path', () => {
  let gw: TestGateway;
  let admin: string;

  beforeAll(async () => {
    expect(await loadFhirDefinitions()).toBe('indexed-schema');
    expect(freezeTypes()).toBeGreaterThan(10_000);
    // the saved schema shares the one `[{ code: 'boolean' }]` among the types, and it is frozen
    const active = (type: string) => getAllDataTypes()[type]?.elements.active?.type;
    expect(active('Patient')).toBe(active('Practitioner'));
    expect(() => (active('Patient') as unknown[]).push({ code: 'string' })).toThrow(TypeError);
    gw = await startTestGateway();
    admin = await gw.adminToken();
  });

  afterAll(async () => {
    await gw?.close();
  });

  const create = async (resource: Record<string, unknown>) => {
    const response = await gw.call(`/fhir/${resource.resourceType}`, {
      method: 'POST',
      token: admin,
      headers: JSON_FHIR,
      body: JSON.stringify(resource),
    });
    return { status: response.status, body: (await response.json()) as { id?: string } };
  };

  it('validates, stores, searches and checks resources on it', async () => {
    // provisioning: our Patient and Practitioner profiles on top of R4, a valid and a refused one each
    const patient = await gw.call('/fhir/patient', {
      method: 'POST',
      token: admin,
      json: { name: 'Frieda Frozen', email: 'frieda@example.com', dob: '1971-02-03' },
    });
    expect(patient.status).toBe(201);
    const patientId = ((await patient.json()) as { fhir_id: string }).fhir_id;
    const badDob = await gw.call('/fhir/patient', {
      method: 'POST',
      token: admin,
      json: { name: 'Bad Date', email: 'bad-date@example.com', dob: '1971-02-30' },
    });
    expect(badDob.status).toBe(400);
    expect(((await badDob.json()) as { errors: { path: string }[] }).errors[0]?.path).toBe('dob');
    // a Patient through the passthrough is validated against R4 and our profile too
    const badGender = await create({
      resourceType: 'Patient',
      name: [{ family: 'Robot' }],
      gender: 'robot',
      telecom: [{ system: 'email', value: 'robot@example.com' }],
    });
    expect([badGender.status, badGender.body]).toEqual([
      400,
      expect.objectContaining({ issue: [expect.objectContaining({ expression: ['gender'] })] }),
    ]);
    const practitioner = await gw.call('/fhir/practitioner', {
      method: 'POST',
      token: admin,
      json: { name: 'Dr Frost', email: 'frost@example.com' },
    });
    expect(practitioner.status).toBe(201);
    const practitionerId = ((await practitioner.json()) as { fhir_id: string }).fhir_id;

    // the embedded server's validation: choice types, components, references, a backbone element
    const observation = await create({
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '85354-9' }], text: 'Blood pressure' },
      subject: { reference: `Patient/${patientId}` },
      performer: [{ reference: `Practitioner/${practitionerId}` }],
      effectiveDateTime: '2026-11-01T09:30:00Z',
      component: [
        {
          code: { coding: [{ system: 'http://loinc.org', code: '8480-6' }] },
          valueQuantity: { value: 120, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
        },
      ],
    });
    expect(observation.status).toBe(201);
    const encounter = await create({
      resourceType: 'Encounter',
      status: 'finished',
      class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
      subject: { reference: `Patient/${patientId}` },
      participant: [{ individual: { reference: `Practitioner/${practitionerId}` } }],
    });
    expect(encounter.status).toBe(201);
    const bad = await create({ resourceType: 'Observation', status: 'not-a-status' });
    expect([bad.status, bad.body]).toEqual([
      400,
      expect.objectContaining({ issue: [expect.objectContaining({ diagnostics: 'validation_failed' })] }),
    ]);
    const update = await gw.call(`/fhir/Observation/${observation.body.id}`, {
      method: 'PUT',
      token: admin,
      headers: JSON_FHIR,
      body: JSON.stringify({
        resourceType: 'Observation',
        id: observation.body.id,
        status: 'amended',
        code: { text: 'Blood pressure' },
        subject: { reference: `Patient/${patientId}` },
        valueString: 'see components',
      }),
    });
    expect(update.status).toBe(200);

    const reads = [
      `/fhir/Observation?subject=Patient/${patientId}&_include=Observation:performer`,
      `/fhir/Patient?_id=${patientId}&_revinclude=Encounter:subject`,
      `/fhir/Observation?subject=Patient/${patientId}&_elements=status,subject`,
      `/fhir/Encounter?subject=Patient/${patientId}&_summary=true`,
      `/fhir/Observation/${observation.body.id}/_history`,
    ];
    for (const url of reads) expect([url, (await gw.call(url, { token: admin })).status]).toEqual([url, 200]);

    // a patient's own compartment: the response check evaluates the compartment's FHIRPath on every entry
    const code = await codeMailedTo(gw.dataDir, 'frieda@example.com');
    const signedUp = await gw.call('/auth/signup', {
      method: 'POST',
      json: { email: 'frieda@example.com', access_code: code, password: USER_PASSWORD },
    });
    expect(signedUp.status).toBe(201);
    const { token } = (await signedUp.json()) as { token: string };
    for (const url of [
      '/fhir/Observation?_elements=code',
      '/fhir/Encounter',
      `/fhir/Patient/${patientId}`,
      '/patient/observations',
    ])
      expect([url, (await gw.call(url, { token })).status]).toEqual([url, 200]);
  });
});
