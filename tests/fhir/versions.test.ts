import type { Bundle, Observation, Patient } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';

/**
 * Old versions of a record must not decide today's scope. A patient moved from Dr X to Dr A:
 * version 1 names X, version 2 (current) names A. Neither a version read nor a history read may
 * give X the patient back, directly or through the panel cache, and no one's read may take the
 * patient away from A (the cache is filled only by the gateway's own lookups of current records).
 * On every upstream flavour: real HAPI numbers versions 1, 2, 3.
 */

const observation = (patientId: string): Observation => ({
  resourceType: 'Observation',
  status: 'final',
  code: { text: 'Body weight' },
  subject: { reference: `Patient/${patientId}` },
  valueQuantity: { value: 70, unit: 'kg' },
});

describe.each(UPSTREAMS)('a patient moved from one practitioner to another, %s upstream', (upstream) => {
  let gw: TestGateway;
  const ids = { x: '', a: '', p: '', obs: '', v1: '' };
  const tokens = { x: '', a: '', p: '' };

  beforeAll(async () => {
    gw = await startTestGateway({ upstream });
    const fhir = gw.deps.fhir;
    ids.x = (await fhir.create('Practitioner', { resourceType: 'Practitioner', name: [{ family: 'X' }] })).id;
    ids.a = (await fhir.create('Practitioner', { resourceType: 'Practitioner', name: [{ family: 'A' }] })).id;
    const first: Patient = {
      resourceType: 'Patient',
      name: [{ family: 'Moved', given: ['VERSION-ONE'] }],
      generalPractitioner: [{ reference: `Practitioner/${ids.x}` }],
    };
    const created = await fhir.create('Patient', first);
    ids.p = created.id;
    ids.v1 = created.versionId ?? '';
    await fhir.update('Patient', ids.p, {
      ...first,
      id: ids.p,
      name: [{ family: 'Moved', given: ['VERSION-TWO'] }],
      generalPractitioner: [{ reference: `Practitioner/${ids.a}` }],
    });
    ids.obs = (await fhir.create('Observation', observation(ids.p))).id;
    for (const [key, role, fhirId] of [
      ['x', 'practitioner', ids.x],
      ['a', 'practitioner', ids.a],
      ['p', 'patient', ids.p],
    ] as const) {
      const user = await gw.seedUser({ role, fhirId });
      tokens[key] = await gw.login(user.email, user.password);
    }
  });

  afterAll(() => gw.close());

  const asX = {
    read: () => gw.call(`/fhir/Observation/${ids.obs}`, { token: tokens.x }),
    write: () => gw.call('/fhir/Observation', { method: 'POST', token: tokens.x, json: observation(ids.p) }),
  };

  it('the former practitioner is refused before anyone reads the history', async () => {
    expect(ids.v1).not.toBe('');
    expect((await asX.read()).status).toBe(404);
    expect((await gw.call(`/fhir/Patient/${ids.p}`, { token: tokens.x })).status).toBe(404);
  });

  it("the patient's own history read gives the former practitioner nothing back", async () => {
    const history = await gw.call(`/fhir/Patient/${ids.p}/_history`, { token: tokens.p });
    expect(history.status).toBe(200);
    const versions = ((await history.json()) as Bundle<Patient>).entry ?? [];
    expect(versions.map((e) => e.resource?.name?.[0]?.given?.[0]).sort()).toEqual([
      'VERSION-ONE',
      'VERSION-TWO',
    ]);
    expect((await asX.read()).status).toBe(404);
    expect((await asX.write()).status).toBe(403);
  });

  it("the current practitioner's history read gives the former practitioner nothing back either", async () => {
    expect((await gw.call(`/fhir/Patient/${ids.p}/_history`, { token: tokens.a })).status).toBe(200);
    expect((await asX.read()).status).toBe(404);
    expect((await asX.write()).status).toBe(403);
  });

  it('the current practitioner keeps the patient through all of it', async () => {
    expect((await gw.call(`/fhir/Observation/${ids.obs}`, { token: tokens.a })).status).toBe(200);
    const written = await gw.call('/fhir/Observation', {
      method: 'POST',
      token: tokens.a,
      json: observation(ids.p),
    });
    expect(written.status).toBe(201);
  });

  it('a part of the record (_elements without generalPractitioner) does not take the patient away', async () => {
    const partial = await gw.call(`/fhir/Patient?_id=${ids.p}&_elements=name`, { token: tokens.p });
    expect(partial.status).toBe(200);
    expect((await gw.call(`/fhir/Observation/${ids.obs}`, { token: tokens.a })).status).toBe(200);
  });

  it('a version read is judged with the record as it is now: the former practitioner gets 404 for version 1', async () => {
    const v1 = await gw.call(`/fhir/Patient/${ids.p}/_history/${ids.v1}`, { token: tokens.x });
    expect(v1.status).toBe(404);
    expect(await v1.text()).not.toContain('VERSION-ONE');
  });

  it('the patient reads their own old version', async () => {
    const v1 = await gw.call(`/fhir/Patient/${ids.p}/_history/${ids.v1}`, { token: tokens.p });
    expect(v1.status).toBe(200);
    expect(((await v1.json()) as Patient).name?.[0]?.given).toEqual(['VERSION-ONE']);
  });

  it("the denied version read is audited as out of scope with the patient's id", async () => {
    await gw.deps.auditTrail.flush();
    const denied = await gw.deps.db
      .selectFrom('audit_log')
      .select(['action', 'outcome', 'error_code', 'target_fhir_id'])
      .where('outcome', '=', 'denied')
      .where('target_fhir_type', '=', 'Patient')
      .execute();
    expect(denied).toContainEqual({
      action: 'fhir.read',
      outcome: 'denied',
      error_code: 'out_of_scope',
      target_fhir_id: ids.p,
    });
  });
});
