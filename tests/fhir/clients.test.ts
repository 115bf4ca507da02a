import { MedplumClient, OperationOutcomeError } from '@medplum/core';
import type { Bundle, Observation, Patient } from '@medplum/fhirtypes';
import { Client as FhirKitClient } from 'fhir-kit-client';
import smart from 'fhirclient';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unusedPort } from '../helpers/fakeUpstream.js';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';
import { provision, signup } from '../helpers/journey.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * The FHIR client libraries people point at a FHIR server, pointed at the gateway as a
 * practitioner: each pages a search to the end its own way (fhir-kit-client follows the next
 * link, fhirclient crawls pages, Medplum re-requests the type with the next link's parameters
 * plus its own `_count`), reads, creates, and updates with If-Match; a stale If-Match gets the
 * upstream's refusal: 412 on every upstream flavour (real HAPI FHIR answers 409; the gateway maps it).
 */

const OBSERVATIONS = 12;
const PASSWORD = 'a long and plain passphrase';

const observationOf = (patientId: string, i: number): Observation => ({
  resourceType: 'Observation',
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
  subject: { reference: `Patient/${patientId}` },
  effectiveDateTime: new Date(Date.UTC(2026, 5, 1 + i)).toISOString(),
  valueQuantity: { value: 60 + i, unit: '/min' },
});

/** The status of a failed call, however the library reports it. */
async function statusOf(call: Promise<unknown>): Promise<number> {
  try {
    await call;
    return 200;
  } catch (error) {
    const e = error as { response?: { status?: number }; status?: number; statusCode?: number };
    return e.response?.status ?? e.statusCode ?? e.status ?? -1;
  }
}

describe.each(UPSTREAMS)('FHIR client libraries through the gateway, %s upstream', (upstream) => {
  let gw: TestGateway;
  let smtp: SmtpCapture;
  let token: string;
  let patientId: string;
  let fhirBase: string;
  const expected: string[] = [];

  beforeAll(async () => {
    smtp = await startSmtpCapture();
    const port = await unusedPort();
    // the public URL is the real one, so the libraries can follow the gateway's paging links
    gw = await startTestGateway({
      upstream,
      env: { SMTP_URL: smtp.url, PORT: String(port), PUBLIC_BASE_URL: `http://127.0.0.1:${port}` },
    });
    fhirBase = `${gw.url}/fhir`;
    const p = await provision(gw, smtp, `clients-gp-${upstream}@example.com`, 'practitioner');
    const admin = await gw.adminToken();
    const created = await gw.call('/fhir/patient', {
      method: 'POST',
      token: admin,
      json: {
        name: 'Client Case',
        email: `clients-pt-${upstream}@example.com`,
        dob: '1970-01-01',
        general_practitioner_id: p.fhirId,
      },
    });
    patientId = ((await created.json()) as { fhir_id: string }).fhir_id;
    for (let i = 0; i < OBSERVATIONS; i++) {
      const written = await gw.deps.fhir.create('Observation', observationOf(patientId, i));
      expected.push(written.id);
    }
    const signedUp = await signup(gw, { email: p.email, access_code: p.code, password: PASSWORD });
    token = ((await signedUp.json()) as { token: string }).token;
  });

  afterAll(async () => {
    await gw.close();
    await smtp.close();
  });

  describe('fhir-kit-client', () => {
    const client = () => new FhirKitClient({ baseUrl: fhirBase, bearerToken: token });

    /** The ids of every page of a search, its next links followed with nextPage. */
    const pagedIds = async (first: Promise<unknown>) => {
      let bundle = (await first) as Bundle<Observation>;
      const found: string[] = [];
      for (let pages = 0; pages < 10; pages++) {
        found.push(...(bundle.entry ?? []).map((e) => e.resource?.id ?? ''));
        const next = client().nextPage({ bundle: bundle as never });
        if (!next) break;
        bundle = (await next) as unknown as Bundle<Observation>;
      }
      return found;
    };

    it('pages a search to the end, reads, creates and updates with If-Match', async () => {
      const found = await pagedIds(
        client().search({ resourceType: 'Observation', searchParams: { _count: 5 } }),
      );
      expect(found.sort()).toEqual([...expected].sort());

      const patient = (await client().read({ resourceType: 'Patient', id: patientId })) as Patient;
      expect(patient.id).toBe(patientId);

      const created = (await client().create({
        resourceType: 'Observation',
        body: observationOf(patientId, 40) as never,
      })) as unknown as Observation;
      expect(created.id).toBeTruthy();
      const etag = `W/"${created.meta?.versionId}"`;
      const updated = (await client().update({
        resourceType: 'Observation',
        id: created.id ?? '',
        body: { ...created, status: 'amended' } as never,
        options: { headers: { 'If-Match': etag } },
      })) as unknown as Observation;
      expect(updated.status).toBe('amended');
      const stale = client().update({
        resourceType: 'Observation',
        id: created.id ?? '',
        body: { ...created, status: 'corrected' } as never,
        options: { headers: { 'If-Match': etag } },
      });
      expect(await statusOf(stale)).toBe(412);
    });

    it('pages a compartment search (Patient/{id}/Observation) to the end', async () => {
      const found = await pagedIds(
        client().compartmentSearch({
          resourceType: 'Observation',
          compartment: { resourceType: 'Patient', id: patientId },
          searchParams: { _count: 5, code: 'http://loinc.org|8867-4' },
        }),
      );
      expect(found.length).toBeGreaterThanOrEqual(expected.length);
      for (const id of expected) expect(found).toContain(id);
    });
  });

  describe('fhirclient (the SMART on FHIR JavaScript client, Node entry)', () => {
    const client = () =>
      smart({} as never, {} as never).client({ serverUrl: fhirBase, tokenResponse: { access_token: token } });

    it('pages a search to the end, reads, creates and updates with If-Match', async () => {
      const all = (await client().request('Observation?_count=5', {
        pageLimit: 0,
        flat: true,
      })) as Observation[];
      const ids = all.map((o) => o.id ?? '');
      for (const id of expected) expect(ids).toContain(id);
      expect(all.every((o) => o.subject?.reference === `Patient/${patientId}`)).toBe(true);

      const patient = (await client().request(`Patient/${patientId}`)) as Patient;
      expect(patient.id).toBe(patientId);

      const created = (await client().create(observationOf(patientId, 41) as never)) as Observation;
      const etag = `W/"${created.meta?.versionId}"`;
      const updated = (await client().update({ ...created, status: 'amended' } as never, {
        headers: { 'If-Match': etag },
      })) as Observation;
      expect(updated.status).toBe('amended');
      const stale = client().update({ ...created, status: 'corrected' } as never, {
        headers: { 'If-Match': etag },
      });
      expect(await statusOf(stale)).toBe(412);
    });
  });

  describe("Medplum's MedplumClient", () => {
    let lastStatus = 0;
    // MedplumClient turns an error answer into an OperationOutcomeError: the status is read off the wire
    const recordingFetch: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      lastStatus = response.status;
      return response;
    };
    const client = () => {
      const medplum = new MedplumClient({
        baseUrl: `${gw.url}/`,
        fhirUrlPath: 'fhir',
        fetch: recordingFetch,
      });
      medplum.setAccessToken(token);
      return medplum;
    };

    it('pages with searchResourcePages (which adds _count to the next link), reads, creates and updates with If-Match', async () => {
      const medplum = client();
      const found: string[] = [];
      let pages = 0;
      for await (const page of medplum.searchResourcePages('Observation', { _count: 5 })) {
        found.push(...page.map((o) => o.id));
        if (++pages > 20) break;
      }
      for (const id of expected) expect(found).toContain(id);
      expect(pages).toBeGreaterThan(2);

      const patient = await medplum.readResource('Patient', patientId);
      expect(patient.id).toBe(patientId);

      const created = await medplum.createResource(observationOf(patientId, 42));
      const etag = `W/"${created.meta?.versionId}"`;
      const updated = await medplum.updateResource(
        { ...created, status: 'amended' },
        { headers: { 'If-Match': etag } },
      );
      expect(updated.status).toBe('amended');
      const stale = medplum.updateResource(
        { ...created, status: 'corrected' },
        { headers: { 'If-Match': etag } },
      );
      await expect(stale).rejects.toBeInstanceOf(OperationOutcomeError);
      expect(lastStatus).toBe(412);
    });
  });
});
