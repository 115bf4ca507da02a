import type { OperationOutcome } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';

/**
 * A deleted resource (R4 http.html#read: "410 Gone") is told as such only to an admin, who may
 * see every resource anyway. A patient or practitioner is told 404, as for one that never
 * existed: the server shows nothing of a deleted resource, so its compartment cannot be checked,
 * and "deleted" would say that someone's record once had that id.
 */
describe.each(UPSTREAMS)('a deleted resource, %s upstream', (upstream) => {
  let gw: TestGateway;
  const tokens = { admin: '', patient: '', gp: '' };
  let deletedObservation = '';
  let patientId = '';

  beforeAll(async () => {
    gw = await startTestGateway({ upstream });
    const fhir = gw.deps.fhir;
    const gpId = (
      await fhir.create('Practitioner', { resourceType: 'Practitioner', name: [{ family: 'Gp' }] })
    ).id;
    patientId = (
      await fhir.create('Patient', {
        resourceType: 'Patient',
        name: [{ family: 'Deleted' }],
        generalPractitioner: [{ reference: `Practitioner/${gpId}` }],
      })
    ).id;
    deletedObservation = (
      await fhir.create('Observation', {
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'weight' },
        subject: { reference: `Patient/${patientId}` },
      })
    ).id;
    const patient = await gw.seedUser({ role: 'patient', fhirId: patientId });
    const gp = await gw.seedUser({ role: 'practitioner', fhirId: gpId });
    tokens.patient = await gw.login(patient.email, patient.password);
    tokens.gp = await gw.login(gp.email, gp.password);
    tokens.admin = await gw.adminToken();
    expect((await gw.call(`/fhir/Observation/${deletedObservation}`, { token: tokens.patient })).status).toBe(
      200,
    );
    const deleted = await gw.call(`/fhir/Observation/${deletedObservation}`, {
      token: tokens.admin,
      method: 'DELETE',
    });
    expect(deleted.status).toBeLessThan(300);
  });

  afterAll(() => gw.close());

  it('keeps the deletion in the history of a record restored since, for everyone who may read it', async () => {
    const observation = {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'restored' },
      subject: { reference: `Patient/${patientId}` },
    };
    const { id } = await gw.deps.fhir.create('Observation', observation as never);
    const send = (method: string) =>
      gw.call(`/fhir/Observation/${id}`, {
        method,
        token: tokens.admin,
        ...(method === 'PUT' ? { json: { ...observation, id } } : {}),
        headers: { 'content-type': 'application/fhir+json' },
      });
    expect((await send('DELETE')).status).toBeLessThan(300);
    expect((await send('PUT')).status).toBeLessThan(300);
    for (const token of [tokens.admin, tokens.patient, tokens.gp]) {
      const history = (await (await gw.call(`/fhir/Observation/${id}/_history`, { token })).json()) as {
        total?: number;
        entry?: { resource?: unknown; request?: { method?: string } }[];
      };
      const entries = history.entry ?? [];
      expect(entries).toHaveLength(3);
      expect(entries.filter((e) => !e.resource).map((e) => e.request?.method)).toEqual(['DELETE']);
      // a scoped caller's history has no total: it would count versions hidden from them (review S4)
      expect(history.total).toBe(token === tokens.admin ? 3 : undefined);
    }
  });

  it('answers an admin 410 Gone with an OperationOutcome of code "deleted"', async () => {
    const response = await gw.call(`/fhir/Observation/${deletedObservation}`, { token: tokens.admin });
    expect(response.status).toBe(410);
    const outcome = (await response.json()) as OperationOutcome;
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(outcome.issue[0]?.code).toBe('deleted');
  });

  it('answers an admin 404 for an id that never existed', async () => {
    const response = await gw.call('/fhir/Observation/never-was-here', { token: tokens.admin });
    expect(response.status).toBe(404);
  });

  for (const role of ['patient', 'gp'] as const) {
    it(`answers the ${role} 404, as for an id that never existed`, async () => {
      const response = await gw.call(`/fhir/Observation/${deletedObservation}`, { token: tokens[role] });
      expect(response.status).toBe(404);
      expect(((await response.json()) as OperationOutcome).issue[0]?.code).toBe('not-found');
    });
  }
});
