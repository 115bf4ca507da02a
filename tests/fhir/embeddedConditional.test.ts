import fs from 'node:fs';
import type { Bundle, Observation, Patient, Resource } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SUBSETTED } from '../../src/fhir/embedded/elements.js';
import { type EmbeddedFhirServer, startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';
import { tempDir } from '../helpers/tempDir.js';

/**
 * Two R4 features FHIR clients lean on, in the embedded server and through the gateway:
 * the conditional read (https://hl7.org/fhir/R4/http.html#cread) and `_elements`
 * (https://hl7.org/fhir/R4/search.html#elements).
 */

const FHIR_JSON = { 'content-type': 'application/fhir+json' };

function patient(family: string): Patient {
  return {
    resourceType: 'Patient',
    name: [{ family, given: ['Ann'] }],
    gender: 'female',
    birthDate: '1980-02-03',
    _birthDate: { extension: [{ url: 'http://example.org/precision', valueString: 'day' }] },
    telecom: [{ system: 'email', value: `${family.toLowerCase()}@example.com` }],
  } as Patient;
}

function observation(patientId: string, value: number): Observation {
  return {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }], text: 'Heart rate' },
    subject: { reference: `Patient/${patientId}` },
    effectiveDateTime: '2026-01-02T10:00:00Z',
    valueQuantity: { value, unit: 'beats/minute', system: 'http://unitsofmeasure.org', code: '/min' },
    note: [{ text: 'resting' }],
  };
}

function isSubsetted(resource: Resource | undefined): boolean {
  return !!resource?.meta?.tag?.some((t) => t.system === SUBSETTED.system && t.code === SUBSETTED.code);
}

describe('embedded FHIR server: conditional read and _elements', () => {
  let server: EmbeddedFhirServer;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = tempDir();
    server = await startEmbeddedFhirServer({ dataDir });
  });
  afterAll(async () => {
    await server?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  async function create<T extends Resource>(resource: T): Promise<T & { id: string }> {
    const response = await fetch(`${server.baseUrl}/${resource.resourceType}`, {
      method: 'POST',
      headers: FHIR_JSON,
      body: JSON.stringify(resource),
    });
    expect(response.status).toBe(201);
    return (await response.json()) as T & { id: string };
  }

  const read = (path: string, headers: Record<string, string> = {}) =>
    fetch(`${server.baseUrl}/${path}`, { headers });

  it('answers 304 without a body when If-None-Match names the current version', async () => {
    const created = await create(patient('Current'));
    const first = await read(`Patient/${created.id}`);
    const etag = first.headers.get('etag');
    expect(etag).toBe(`W/"${created.meta?.versionId}"`);
    await first.arrayBuffer();

    const again = await read(`Patient/${created.id}`, { 'if-none-match': etag! });
    expect(again.status).toBe(304);
    expect(again.headers.get('etag')).toBe(etag);
    expect(await again.text()).toBe('');
    // a strong tag, a list and * match too (weak comparison, RFC 9110 section 8.8.3.2)
    for (const header of [`"${created.meta?.versionId}"`, `W/"other", ${etag}`, '*']) {
      const response = await read(`Patient/${created.id}`, { 'if-none-match': header });
      expect(response.status, header).toBe(304);
    }
  });

  it('declares conditionalRead full-support in its CapabilityStatement', async () => {
    const statement = (await (await read('metadata')).json()) as {
      rest: { resource: { type: string; conditionalRead?: string }[] }[];
    };
    const types = statement.rest[0]?.resource ?? [];
    expect(types.find((r) => r.type === 'Observation')?.conditionalRead).toBe('full-support');
    expect(types.every((r) => r.conditionalRead === 'full-support')).toBe(true);
  });

  it('answers 200 with the new version when If-None-Match names an older one', async () => {
    const created = await create(patient('Stale'));
    const oldTag = `W/"${created.meta?.versionId}"`;
    const update = await fetch(`${server.baseUrl}/Patient/${created.id}`, {
      method: 'PUT',
      headers: FHIR_JSON,
      body: JSON.stringify({ ...created, gender: 'other' }),
    });
    expect(update.status).toBe(200);
    const updated = (await update.json()) as Patient;

    const response = await read(`Patient/${created.id}`, { 'if-none-match': oldTag });
    expect(response.status).toBe(200);
    expect(response.headers.get('etag')).toBe(`W/"${updated.meta?.versionId}"`);
    expect(((await response.json()) as Patient).gender).toBe('other');
  });

  it('honours If-Modified-Since only without If-None-Match', async () => {
    const created = await create(patient('Since'));
    const future = new Date(Date.now() + 3_600_000).toUTCString();
    const past = new Date(Date.now() - 3_600_000).toUTCString();
    expect((await read(`Patient/${created.id}`, { 'if-modified-since': future })).status).toBe(304);
    expect((await read(`Patient/${created.id}`, { 'if-modified-since': past })).status).toBe(200);
    const both = await read(`Patient/${created.id}`, {
      'if-none-match': 'W/"other"',
      'if-modified-since': future,
    });
    expect(both.status).toBe(200);
  });

  it('still answers 404 and 410 to a conditional read of a missing or deleted resource', async () => {
    expect((await read('Patient/does-not-exist', { 'if-none-match': '*' })).status).toBe(404);
    const created = await create(patient('Deleted'));
    await fetch(`${server.baseUrl}/Patient/${created.id}`, { method: 'DELETE' });
    expect((await read(`Patient/${created.id}`, { 'if-none-match': '*' })).status).toBe(410);
  });

  it('returns only the named elements plus resourceType, id and meta on read, tagged SUBSETTED', async () => {
    const created = await create(patient('Elements'));
    const response = await read(`Patient/${created.id}?_elements=name,birthDate`);
    expect(response.status).toBe(200);
    const subset = (await response.json()) as Patient;
    expect(Object.keys(subset).sort()).toEqual([
      '_birthDate',
      'birthDate',
      'id',
      'meta',
      'name',
      'resourceType',
    ]);
    expect(subset.meta?.versionId).toBe(created.meta?.versionId);
    expect(subset.meta?.tag).toEqual([SUBSETTED]);
    expect(response.headers.get('etag')).toBe(`W/"${created.meta?.versionId}"`);

    // the stored resource is untouched
    const whole = (await (await read(`Patient/${created.id}`)).json()) as Patient;
    expect(whole.telecom).toBeDefined();
    expect(isSubsetted(whole)).toBe(false);
    // vread too
    const version = (await (
      await read(`Patient/${created.id}/_history/${created.meta?.versionId}?_elements=gender`)
    ).json()) as Patient;
    expect(Object.keys(version).sort()).toEqual(['gender', 'id', 'meta', 'resourceType']);
  });

  it('subsets search matches, names choice elements without their type, and keeps _elements on paging links', async () => {
    const p = await create(patient('Searched'));
    await create(observation(p.id, 61));
    await create(observation(p.id, 62));
    const response = await read(
      `Observation?subject=Patient/${p.id}&_elements=code,value&_count=1&_include=Observation:subject`,
    );
    const bundle = (await response.json()) as Bundle;
    expect(bundle.total).toBe(2);
    const match = bundle.entry?.find((e) => e.search?.mode === 'match')?.resource as Observation;
    expect(Object.keys(match).sort()).toEqual(['code', 'id', 'meta', 'resourceType', 'valueQuantity']);
    expect(isSubsetted(match)).toBe(true);
    // `code,value` names Observation elements: the included Patient is whole
    const included = bundle.entry?.find((e) => e.search?.mode === 'include')?.resource as Patient;
    expect(included.telecom).toBeDefined();
    expect(isSubsetted(included)).toBe(false);
    const next = bundle.link?.find((l) => l.relation === 'next')?.url ?? '';
    expect(new URL(next).searchParams.get('_elements')).toBe('code,value');

    const page2 = (await (await fetch(next)).json()) as Bundle;
    const second = page2.entry?.find((e) => e.search?.mode === 'match')?.resource as Observation;
    expect(Object.keys(second).sort()).toEqual(['code', 'id', 'meta', 'resourceType', 'valueQuantity']);
  });

  it('applies Type.element to included resources, and reads _elements from a POST _search form', async () => {
    const p = await create(patient('Included'));
    await create(observation(p.id, 70));
    const response = await fetch(`${server.baseUrl}/Observation/_search`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `subject=Patient/${p.id}&_include=Observation:subject&_elements=status,Patient.name`,
    });
    const bundle = (await response.json()) as Bundle;
    const match = bundle.entry?.find((e) => e.search?.mode === 'match')?.resource as Observation;
    expect(Object.keys(match).sort()).toEqual(['id', 'meta', 'resourceType', 'status']);
    const included = bundle.entry?.find((e) => e.search?.mode === 'include')?.resource as Patient;
    expect(Object.keys(included).sort()).toEqual(['id', 'meta', 'name', 'resourceType']);
    expect(isSubsetted(included)).toBe(true);
  });
});

describe.each(UPSTREAMS)(
  'gateway /fhir: conditional reads relayed to the caller, %s upstream',
  (upstream) => {
    let gw: TestGateway;
    let tokenA: string;
    let admin: string;
    const ids = { A: '', B: '', obsA: '', obsB: '' };
    const versions = { A: '', obsA: '', obsB: '' };

    /** Written upstream with the gateway's own FHIR client, as provisioning would. */
    const upstreamCreate = async (resource: Resource) => {
      const written = await gw.deps.fhir.create(resource.resourceType, resource);
      return { id: written.id, versionId: written.versionId ?? '' };
    };

    beforeAll(async () => {
      gw = await startTestGateway({ upstream });
      const a = await upstreamCreate(patient('Alpha'));
      const b = await upstreamCreate(patient('Beta'));
      const obsA = await upstreamCreate(observation(a.id, 60));
      const obsB = await upstreamCreate(observation(b.id, 90));
      Object.assign(ids, { A: a.id, B: b.id, obsA: obsA.id, obsB: obsB.id });
      Object.assign(versions, { A: a.versionId, obsA: obsA.versionId, obsB: obsB.versionId });
      const user = await gw.seedUser({ role: 'patient', fhirId: a.id });
      tokenA = await gw.login(user.email, user.password);
      admin = await gw.adminToken();
    });
    afterAll(() => gw.close());

    it("answers a patient's conditional read of their own Observation with 304 and no body", async () => {
      const first = await gw.call(`/fhir/Observation/${ids.obsA}`, { token: tokenA });
      expect(first.status).toBe(200);
      const etag = first.headers.get('etag');
      expect(etag).toBe(`W/"${versions.obsA}"`);
      await first.arrayBuffer();

      const again = await gw.call(`/fhir/Observation/${ids.obsA}`, {
        token: tokenA,
        headers: { 'if-none-match': etag! },
      });
      expect(again.status).toBe(304);
      expect(await again.text()).toBe('');
      expect(again.headers.get('etag')).toBe(etag);

      const own = await gw.call(`/fhir/Patient/${ids.A}`, {
        token: tokenA,
        headers: { 'if-none-match': `W/"${versions.A}"` },
      });
      expect(own.status).toBe(304);
    });

    it('answers 200 with the resource when the patient holds an older version', async () => {
      const response = await gw.call(`/fhir/Observation/${ids.obsA}`, {
        token: tokenA,
        headers: { 'if-none-match': 'W/"not-the-current-version"' },
      });
      expect(response.status).toBe(200);
      expect(((await response.json()) as Observation).id).toBe(ids.obsA);
    });

    it("answers 404, not 304, to a conditional read of another patient's Observation (no existence oracle)", async () => {
      for (const header of [`W/"${versions.obsB}"`, '*']) {
        const response = await gw.call(`/fhir/Observation/${ids.obsB}`, {
          token: tokenA,
          headers: { 'if-none-match': header },
        });
        expect(response.status, header).toBe(404);
        expect(await response.text()).not.toContain('90');
      }
      const since = await gw.call(`/fhir/Observation/${ids.obsB}`, {
        token: tokenA,
        headers: { 'if-modified-since': new Date(Date.now() + 3_600_000).toUTCString() },
      });
      expect(since.status).toBe(404);
    });

    it("relays an admin's conditional read as 304 too, with the ETag it matched (HAPI leaves it out)", async () => {
      const response = await gw.call(`/fhir/Observation/${ids.obsB}`, {
        token: admin,
        headers: { 'if-none-match': `W/"${versions.obsB}"` },
      });
      expect(response.status).toBe(304);
      expect(await response.text()).toBe('');
      // RFC 9110 section 15.4.5: a 304 carries the ETag a 200 would have
      expect(response.headers.get('etag')).toBe(`W/"${versions.obsB}"`);
    });
  },
);
