import http from 'node:http';
import type { Bundle, Observation, Resource } from '@medplum/fhirtypes';
import { Client } from 'fhir-kit-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unusedPort } from '../helpers/fakeUpstream.js';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';
import { provision, signup } from '../helpers/journey.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * The attack catalogue of the /fhir passthrough (HAPI #3357, #3941, #6065; Azure #5683;
 * LinuxForHealth #2300; Medplum #7641): patient A and practitioner P (assigned to A only) must
 * never see anything of patient B, whose every resource carries a canary string.
 */

const CANARY = 'CANARY-B-7f3e9';
const PASSWORD = 'a long and plain passphrase';
const A_OBSERVATIONS = 23;

type Json = Record<string, unknown>;

describe.each(UPSTREAMS)('FHIR passthrough scoping, %s upstream', (upstream) => {
  let gw: TestGateway;
  let smtp: SmtpCapture;
  let admin: string;
  let tokenA: string;
  let tokenP: string;
  let tokenB: string;
  const ids = { A: '', B: '', P: '', obsA: [] as string[], obsB: [] as string[], bByA: '', conditionB: '' };
  /** Every body and header the suite saw, scanned at the end for the upstream base URL. */
  const seen: string[] = [];

  async function call(path: string, token: string | undefined, init: RequestInit = {}) {
    const headers = new Headers(init.headers);
    if (token) headers.set('authorization', `Bearer ${token}`);
    const response = await fetch(`${gw.url}${path}`, { ...init, headers });
    const text = await response.text();
    seen.push(text, JSON.stringify([...response.headers]));
    return { status: response.status, text, json: () => JSON.parse(text) as Json, headers: response.headers };
  }

  /** A request with the path exactly as written: fetch would normalise `..` and `//` away. */
  function raw(path: string, token: string) {
    return new Promise<{ status: number; text: string }>((resolve, reject) => {
      const url = new URL(gw.url);
      const req = http.request(
        { host: url.hostname, port: url.port, path, headers: { authorization: `Bearer ${token}` } },
        (res) => {
          let text = '';
          res.on('data', (c) => {
            text += c;
          });
          res.on('end', () => {
            seen.push(text);
            resolve({ status: res.statusCode ?? 0, text });
          });
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  async function createAsAdmin(resource: Json): Promise<string> {
    const response = await call(`/fhir/${resource.resourceType}`, admin, {
      method: 'POST',
      body: JSON.stringify(resource),
      headers: { 'content-type': 'application/fhir+json' },
    });
    if (response.status !== 201) throw new Error(`create failed ${response.status} ${response.text}`);
    return response.json().id as string;
  }

  const observation = (patient: string, i: number, extra: Json = {}): Json => ({
    resourceType: 'Observation',
    status: 'final',
    category: [
      {
        coding: [
          { system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' },
        ],
      },
    ],
    code: {
      coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }],
      text: 'Heart rate',
    },
    subject: { reference: `Patient/${patient}` },
    effectiveDateTime: new Date(Date.UTC(2026, 0, 1 + i)).toISOString(),
    valueQuantity: { value: 60 + i, unit: 'beats/minute', system: 'http://unitsofmeasure.org', code: '/min' },
    ...extra,
  });

  beforeAll(async () => {
    smtp = await startSmtpCapture();
    const port = await unusedPort();
    // the public URL is the real one, so fhir-kit-client can follow the gateway's paging links
    gw = await startTestGateway({
      upstream,
      env: { SMTP_URL: smtp.url, PORT: String(port), PUBLIC_BASE_URL: `http://127.0.0.1:${port}` },
    });
    admin = await gw.adminToken();
    const p = await provision(gw, smtp, 'dr-p@example.com', 'practitioner');
    ids.P = p.fhirId;
    const pa = await gw.call('/fhir/patient', {
      method: 'POST',
      token: admin,
      json: {
        name: 'Alice A',
        email: 'alice-a@example.com',
        dob: '1980-01-01',
        general_practitioner_id: ids.P,
      },
    });
    ids.A = ((await pa.json()) as { fhir_id: string }).fhir_id;
    const pb = await gw.call('/fhir/patient', {
      method: 'POST',
      token: admin,
      json: { name: `Bob ${CANARY}`, email: 'bob-b@example.com', dob: '1981-01-01' },
    });
    ids.B = ((await pb.json()) as { fhir_id: string }).fhir_id;
    const codeOf = async (email: string) => {
      const [mail] = await import('../helpers/journey.js').then((j) => j.mailsTo(smtp, email));
      return (await import('../helpers/journey.js')).codeIn(mail!);
    };
    const tokenOf = async (email: string) => {
      const response = await signup(gw, { email, access_code: await codeOf(email), password: PASSWORD });
      return ((await response.json()) as { token: string }).token;
    };
    tokenA = await tokenOf('alice-a@example.com');
    tokenB = await tokenOf('bob-b@example.com');
    tokenP = await tokenOf(p.email);

    for (let i = 0; i < A_OBSERVATIONS; i++) ids.obsA.push(await createAsAdmin(observation(ids.A, i)));
    for (let i = 0; i < 3; i++) {
      ids.obsB.push(
        await createAsAdmin(observation(ids.B, i, { valueString: CANARY, valueQuantity: undefined })),
      );
    }
    // B's observation performed by A: in A's R4 compartment via `performer`, but not A's record
    ids.bByA = await createAsAdmin(
      observation(ids.B, 9, { performer: [{ reference: `Patient/${ids.A}` }], note: [{ text: CANARY }] }),
    );
    ids.obsB.push(ids.bByA);
    ids.conditionB = await createAsAdmin({
      resourceType: 'Condition',
      subject: { reference: `Patient/${ids.B}` },
      code: { text: CANARY },
      asserter: { reference: `Patient/${ids.A}` },
    });
  });

  afterAll(async () => {
    await gw.close();
    await smtp.close();
  });

  const noCanary = (text: string) => expect(text).not.toContain(CANARY);

  describe('slim endpoints', () => {
    it("returns exactly A's observations as DTOs and walks every page with next_cursor", async () => {
      const found: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const response = await call(
          `/patient/observations?limit=10${cursor ? `&cursor=${cursor}` : ''}`,
          tokenA,
        );
        expect(response.status).toBe(200);
        noCanary(response.text);
        const body = response.json() as { observations: Json[]; next_cursor: string | null };
        found.push(...body.observations.map((o) => o.id as string));
        cursor = body.next_cursor;
        pages++;
      } while (cursor && pages < 10);
      expect(pages).toBe(3);
      expect(found.sort()).toEqual([...ids.obsA].sort());
    });

    it('maps an observation to the documented DTO, newest first', async () => {
      const body = (await call('/patient/observations?limit=2', tokenA)).json() as { observations: Json[] };
      expect(body.observations[0]).toEqual({
        id: expect.any(String),
        status: 'final',
        category: [
          {
            system: 'http://terminology.hl7.org/CodeSystem/observation-category',
            code: 'vital-signs',
            display: null,
          },
        ],
        code: { system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' },
        value: {
          type: 'quantity',
          comparator: null,
          value: 60 + A_OBSERVATIONS - 1,
          unit: 'beats/minute',
          system: 'http://unitsofmeasure.org',
          code: '/min',
        },
        components: [],
        effective: expect.any(String),
        issued: null,
        interpretation: [],
        reference_range: [],
      });
      expect((body.observations[0]!.effective as string) > (body.observations[1]!.effective as string)).toBe(
        true,
      );
    });

    it('takes a page size of digits only (review R4: Number() read 0x10 as 16)', async () => {
      for (const limit of ['0x10', '1e1', '2.0', '%205', '101'])
        expect((await call(`/patient/observations?limit=${limit}`, tokenA)).status, limit).toBe(400);
      expect((await call('/patient/observations?limit=5', tokenA)).status).toBe(200);
    });

    it('ignores ?patient= and headers naming another patient: the scope comes from the token only', async () => {
      const response = await call(`/patient/observations?patient=${ids.B}`, tokenA);
      expect(response.status).toBe(400);
      const profile = await call(`/patient/profile?patient=${ids.B}`, tokenA);
      expect(profile.status).toBe(400);
      noCanary(profile.text);
      const headers = { 'x-patient-id': ids.B, 'x-fhir-id': ids.B };
      const withHeaders = await call('/patient/observations?limit=100', tokenA, { headers });
      noCanary(withHeaders.text);
      expect((withHeaders.json().observations as unknown[]).length).toBe(A_OBSERVATIONS);
    });

    it('refuses a cursor issued to another user or tampered with', async () => {
      const first = (await call('/patient/observations?limit=5', tokenA)).json() as { next_cursor: string };
      const foreign = await call(`/patient/observations?cursor=${first.next_cursor}`, tokenB);
      expect(foreign.status).toBe(400);
      // named as this route spells it (`cursor`; the FHIR links' is `_cursor`)
      expect(foreign.json()).toMatchObject({ errors: [{ path: 'cursor' }] });
      const tampered = first.next_cursor.replace(/.$/, (ch) => (ch === 'A' ? 'B' : 'A'));
      expect((await call(`/patient/observations?cursor=${tampered}`, tokenA)).status).toBe(400);
    });

    it("shows B only B's own observations, and A's profile only to A", async () => {
      const b = await call('/patient/observations?limit=100', tokenB);
      expect((b.json().observations as Json[]).map((o) => o.id).sort()).toEqual([...ids.obsB].sort());
      const profile = await call('/patient/profile', tokenA);
      expect(profile.json()).toMatchObject({
        id: ids.A,
        name: 'Alice A',
        birth_date: '1980-01-01',
        email: 'alice-a@example.com',
      });
      noCanary(profile.text);
      expect(profile.text).not.toContain('identifiers/account-email');
    });

    it('lists only assigned patients to a practitioner, and answers 404 alike for unassigned and missing patients', async () => {
      const list = await call('/practitioner/patients', tokenP);
      expect((list.json().patients as Json[]).map((p) => p.id)).toEqual([ids.A]);
      noCanary(list.text);
      const ofA = await call(`/practitioner/patients/${ids.A}/observations?limit=100`, tokenP);
      expect((ofA.json().observations as unknown[]).length).toBe(A_OBSERVATIONS);
      const ofB = await call(`/practitioner/patients/${ids.B}/observations`, tokenP);
      const missing = await call('/practitioner/patients/no-such-patient/observations', tokenP);
      expect(ofB.status).toBe(404);
      expect(ofB.text).toBe(missing.text);
    });

    it('refuses other roles with 403', async () => {
      expect((await call('/patient/observations', tokenP)).status).toBe(403);
      expect((await call('/patient/observations', admin)).status).toBe(403);
      expect((await call('/practitioner/patients', tokenA)).status).toBe(403);
    });
  });

  describe('with fhir-kit-client as a patient', () => {
    const client = () => new Client({ baseUrl: `${gw.url}/fhir`, bearerToken: tokenA });

    it("searches and pages through A's observations only", async () => {
      let bundle = (await client().search({
        resourceType: 'Observation',
        searchParams: { _count: 10 },
      })) as unknown as Bundle<Observation>;
      const found: string[] = [];
      for (let pages = 0; pages < 10; pages++) {
        seen.push(JSON.stringify(bundle));
        noCanary(JSON.stringify(bundle));
        found.push(...(bundle.entry ?? []).map((e) => e.resource!.id!));
        const next = client().nextPage({ bundle: bundle as never });
        if (!next) break;
        bundle = (await next) as unknown as Bundle<Observation>;
      }
      expect(found.sort()).toEqual([...ids.obsA].sort());
    });

    it("reads A's resources and answers 404 for B's exactly like for a random id", async () => {
      const own = (await client().read({ resourceType: 'Observation', id: ids.obsA[0]! })) as Resource;
      expect(own.id).toBe(ids.obsA[0]);
      const status = async (id: string) => {
        try {
          await client().read({ resourceType: 'Observation', id });
          return 200;
        } catch (error) {
          return (error as { response?: { status: number } }).response?.status;
        }
      };
      expect(await status(ids.obsB[0]!)).toBe(404);
      const bRead = await call(`/fhir/Observation/${ids.obsB[0]}`, tokenA);
      const random = await call('/fhir/Observation/does-not-exist-123', tokenA);
      expect(bRead.status).toBe(404);
      expect(bRead.text).toBe(random.text);
      expect((await call(`/fhir/Patient/${ids.B}`, tokenA)).text).toBe(
        random.text.replace('Observation', 'Observation'),
      );
    });
  });

  describe('escapes that must return nothing of B', () => {
    const searches = () => [
      `Observation?subject=${ids.B}`,
      `Observation?subject=Patient/${ids.B}`,
      `Observation?subject=${encodeURIComponent(`${gw.url}/fhir/Patient/${ids.B}`)}`,
      `Observation?subject=${encodeURIComponent(`${gw.deps.fhir.baseUrl}/Patient/${ids.B}`)}`,
      `Observation?subject=Patient/${ids.A},Patient/${ids.B}`,
      `Observation?subject=Patient/${ids.A}&subject=Patient/${ids.B}`,
      `Observation?patient=${ids.B}`,
      `Observation?subject:Patient=${ids.B}`,
      `Observation?_id=${ids.obsB[0]},${ids.obsA[0]}`,
      `Observation?performer=Patient/${ids.A}`,
      `Observation?_include=Observation:subject`,
      `Patient?_id=${ids.B}`,
      `Patient?_revinclude=Observation:subject`,
      `Patient?_revinclude=Observation:performer`,
      `Patient?_revinclude=Condition:asserter`,
      `Condition?asserter=Patient/${ids.A}`,
      `Patient`,
      `Observation?_count=1000`,
      // a compartment search is read as the type's search by its linking parameter: narrowed alike
      `Patient/${ids.B}/Observation`,
      `Patient/${ids.B}/Condition`,
    ];

    it('searches in every form answer only A data (or nothing)', async () => {
      for (const query of searches()) {
        const response = await call(`/fhir/${query}`, tokenA);
        expect([200, 400], query).toContain(response.status);
        noCanary(response.text);
        if (response.status === 200) {
          const bundle = response.json() as unknown as Bundle;
          for (const entry of bundle.entry ?? []) {
            const resource = entry.resource as Resource & { subject?: { reference?: string } };
            const owner =
              resource.resourceType === 'Patient'
                ? resource.id
                : resource.subject?.reference?.split('/').pop();
            expect(owner, query).toBe(ids.A);
          }
        }
      }
    });

    // fhir-kit-client's compartmentSearch asks `Patient/{id}/{type}` (helper review: it was a 400)
    it("answers a patient's own compartment search as the search of the type for them", async () => {
      const compartment = await call(`/fhir/Patient/${ids.A}/Observation`, tokenA);
      const typeSearch = await call(`/fhir/Observation?subject=Patient/${ids.A}`, tokenA);
      expect(compartment.status).toBe(200);
      const idsOf = (text: string) =>
        ((JSON.parse(text) as Bundle).entry ?? []).map((e) => e.resource?.id).sort();
      expect(idsOf(compartment.text)).toEqual(idsOf(typeSearch.text));
      expect(idsOf(compartment.text).length).toBeGreaterThan(0);
      const post = await call(`/fhir/Patient/${ids.A}/Observation`, tokenA, {
        method: 'POST',
        headers: { 'content-type': 'application/fhir+json' },
        body: '{"resourceType":"Observation"}',
      });
      expect(post.status).toBe(400);
    });

    // 400: a search form that is refused; 403: what the role may never use (an admin may)
    it.each([
      ['a chained parameter', 'Observation?subject.name=Bob', 400],
      ['_has', `Patient?_has:Observation:subject:code=8867-4`, 400],
      ['_filter', 'Observation?_filter=subject eq x', 400],
      ['_query', 'Observation?_query=everything', 400],
      ['_list', 'Observation?_list=abc', 400],
      ['_contained', 'Observation?_contained=true', 400],
      ['an _include wildcard', 'Observation?_include=*', 400],
      ['_include:iterate', 'Observation?_include:iterate=Observation:subject', 400],
      ['_revinclude:iterate', 'Patient?_revinclude:iterate=Observation:subject', 400],
      ['a compartment search of a type outside the compartment', `Patient/${'{B}'}/Practitioner`, 400],
      ['a compartment search of another compartment', `Encounter/${'{B}'}/Observation`, 400],
      ['a lower-case type', 'observation', 400],
      ['an upper-case type', 'OBSERVATION', 400],
      ['an unknown parameter', 'Observation?canary=1', 400],
      ['a reference by identifier', 'Observation?subject:identifier=x|y', 400],
      ['$everything', `Patient/${'{B}'}/$everything`, 403],
      ['$graphql', '$graphql?query={PatientList{id}}', 403],
      ['system-level search', '?_type=Patient', 403],
      ['system history', '_history', 403],
      ['type history', 'Observation/_history', 403],
    ])('refuses %s with an OperationOutcome (%s)', async (_label, path, status) => {
      const response = await call(`/fhir/${path.replace('{B}', ids.B)}`, tokenA);
      expect(response.status).toBe(status);
      const outcome = response.json() as { resourceType: string; issue: { code: string }[] };
      expect(outcome.resourceType).toBe('OperationOutcome');
      if (status === 403) expect(outcome.issue[0]?.code).toBe('forbidden');
      noCanary(response.text);
    });

    it('refuses :iterate on a search parameter itself, before the FHIR server sees it', async () => {
      const response = await call('/fhir/Observation?code:iterate=8867-4', tokenA);
      expect(response.status).toBe(400);
      expect(response.text).toContain('the :iterate modifier is not allowed');
    });

    it('answers 404 for history and versions of B resources', async () => {
      for (const path of [
        `Observation/${ids.obsB[0]}/_history`,
        `Observation/${ids.obsB[0]}/_history/1`,
        `Condition/${ids.conditionB}`,
      ]) {
        const response = await call(`/fhir/${path}`, tokenA);
        expect(response.status, path).toBe(404);
        noCanary(response.text);
      }
      const own = await call(`/fhir/Observation/${ids.obsA[0]}/_history`, tokenA);
      expect(own.status).toBe(200);
    });

    it("reads another server's Patient/A as nobody: a record about it is not A's (review S4)", async () => {
      const elsewhere = `http://other.example/fhir/Patient/${ids.A}`;
      const created = await call('/fhir/Observation', admin, {
        method: 'POST',
        body: JSON.stringify(
          observation(ids.A, 30, { subject: { reference: elsewhere }, note: [{ text: CANARY }] }),
        ),
        headers: { 'content-type': 'application/fhir+json' },
      });
      // real HAPI stores no reference to another server (it allows no external references by default)
      if (upstream === 'hapi-real') return expect(created.status).toBe(400);
      expect(created.status).toBe(201);
      const id = created.json().id as string;
      for (const token of [tokenA, tokenP]) {
        const read = await call(`/fhir/Observation/${id}`, token);
        expect(read.status).toBe(404);
        noCanary(read.text);
      }
      expect((await call(`/fhir/Observation/${id}`, admin)).status).toBe(200);
    });

    it('shows an AuditEvent to the patient it is about (entity), not to one who only acted in it (agent)', async () => {
      const event = (agent: string, entity: string, detail: string) => ({
        resourceType: 'AuditEvent',
        type: {
          system: 'http://dicom.nema.org/resources/ontology/DCM',
          code: '110110',
          display: 'Patient Record',
        },
        recorded: '2026-01-02T03:04:05Z',
        agent: [{ who: { reference: agent }, requestor: true }],
        source: { observer: { display: 'review R3' } },
        entity: [{ what: { reference: entity }, detail: [{ type: 'note', valueString: detail }] }],
      });
      // A acted on B's record (R4's AuditEvent.patient is agent.who | entity.what)
      const aboutB = await createAsAdmin(event(`Patient/${ids.A}`, `Patient/${ids.B}`, CANARY));
      const aboutA = await createAsAdmin(event(`Practitioner/${ids.P}`, `Patient/${ids.A}`, 'about A'));
      for (const token of [tokenA, tokenP]) {
        for (const query of ['AuditEvent?_count=100', `AuditEvent?patient=Patient/${ids.A}&_count=100`]) {
          const listed = await call(`/fhir/${query}`, token);
          expect(listed.status, query).toBe(200);
          noCanary(listed.text);
          const found = ((listed.json() as unknown as Bundle).entry ?? []).map((e) => e.resource?.id);
          expect(found, query).toContain(aboutA);
        }
        const read = await call(`/fhir/AuditEvent/${aboutB}`, token);
        expect(read.status).toBe(404);
        noCanary(read.text);
        expect((await call(`/fhir/AuditEvent/${aboutA}`, token)).status).toBe(200);
      }
    });

    it('refuses batch and transaction bundles, and every write, from a patient', async () => {
      const bundle = {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [{ request: { method: 'GET', url: `Patient/${ids.B}` } }],
      };
      const batch = await call('/fhir', tokenA, {
        method: 'POST',
        body: JSON.stringify(bundle),
        headers: { 'content-type': 'application/fhir+json' },
      });
      expect(batch.status).toBe(403);
      noCanary(batch.text);
      const write = await call('/fhir/Observation', tokenA, {
        method: 'POST',
        body: JSON.stringify(observation(ids.A, 1)),
        headers: { 'content-type': 'application/fhir+json' },
      });
      expect(write.status).toBe(403);
      expect((await call(`/fhir/Observation/${ids.obsA[0]}`, tokenA, { method: 'DELETE' })).status).toBe(403);
    });

    it('applies the same checks to POST _search form bodies', async () => {
      for (const body of [
        `subject=Patient/${ids.B}`,
        `patient=${ids.B}`,
        '_has:Observation:subject:code=1',
        `_id=${ids.obsB[0]}`,
      ]) {
        const response = await call('/fhir/Observation/_search', tokenA, {
          method: 'POST',
          body,
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        });
        expect([200, 400], body).toContain(response.status);
        noCanary(response.text);
        if (response.status === 200)
          expect((response.json() as unknown as Bundle).entry ?? []).toHaveLength(0);
      }
    });

    it('refuses encoded slashes, dot segments, repeated slashes and backslashes in the path', async () => {
      for (const path of [
        `/fhir/Observation%2F${ids.obsB[0]}`,
        `/fhir/Observation/${ids.obsA[0]}/..%2F${ids.obsB[0]}`,
        `/fhir/Patient/${ids.A}/../${ids.B}`,
        `/fhir/Patient/./${ids.B}`,
        `/fhir//Patient/${ids.B}`,
        `/fhir/Patient%5C${ids.B}`,
        `/fhir/Patient/%2e%2e/${ids.B}`,
      ]) {
        const response = await raw(path, tokenA);
        expect([400, 404], path).toContain(response.status);
        noCanary(response.text);
      }
    });

    it('refuses a tampered paging cursor and one replayed by another user', async () => {
      const first = (await call('/fhir/Observation?_count=5', tokenA)).json() as unknown as Bundle;
      const next = first.link?.find((l) => l.relation === 'next')?.url;
      expect(next).toContain('_cursor=');
      const cursorPath = next!.slice(gw.url.length);
      expect((await call(cursorPath, tokenA)).status).toBe(200);
      const foreign = await call(cursorPath, tokenB);
      expect(foreign.status).toBe(400);
      noCanary(foreign.text);
      const tampered = await call(cursorPath.replace(/_cursor=./, '_cursor=x'), tokenA);
      expect(tampered.status).toBe(400);
    });

    it('keeps Bundle.total when the check removed only included entries: its absence would tell they exist', async () => {
      const alone = (await call('/fhir/Patient', tokenA)).json() as unknown as Bundle;
      const response = (
        await call('/fhir/Patient?_revinclude=Observation:performer', tokenA)
      ).json() as unknown as Bundle;
      expect(response.entry?.map((e) => e.resource?.id)).toEqual([ids.A]);
      // B's Observations name A as performer and were removed; the answer looks as if there were none
      expect(response.total).toBe(alone.total);
      expect(Object.keys(response).sort()).toEqual(Object.keys(alone).sort());
    });

    it('relays the entries it keeps as the upstream wrote them when it removed others: 1.50 stays 1.50', async () => {
      // the Observation's text is sent as written: HAPI keeps a decimal's precision, a JSON round trip does not
      const body = JSON.stringify(
        observation(ids.A, 80, { performer: [{ reference: `Patient/${ids.B}` }] }),
      ).replace(/"valueQuantity":\{"value":\d+/, '"valueQuantity":{"value":1.50');
      const created = await call('/fhir/Observation', admin, {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/fhir+json' },
      });
      expect(created.status).toBe(201);
      const id = created.json().id as string;
      const decimals = (text: string) => text.match(/"value":\s*[0-9.]+/g);
      const alone = await call(`/fhir/Observation?_id=${id}`, tokenA);
      // B's Patient, included through performer, is removed by the response check
      const trimmed = await call(`/fhir/Observation?_id=${id}&_include=Observation:performer`, tokenA);
      const kept = (trimmed.json() as unknown as Bundle).entry?.map((e) => e.resource?.resourceType);
      expect(kept).toEqual(['Observation']);
      noCanary(trimmed.text);
      expect(decimals(trimmed.text)).toEqual(decimals(alone.text));
    });
  });

  describe('practitioner', () => {
    it('sees A, not B, through /fhir', async () => {
      const patients = (await call('/fhir/Patient', tokenP)).json() as unknown as Bundle;
      expect(patients.entry?.map((e) => e.resource?.id)).toEqual([ids.A]);
      const obs = await call(`/fhir/Observation?subject=Patient/${ids.B}`, tokenP);
      noCanary(obs.text);
      expect(((obs.json() as unknown as Bundle).entry ?? []).length).toBe(0);
      expect((await call(`/fhir/Observation/${ids.obsB[0]}`, tokenP)).status).toBe(404);
      expect((await call(`/fhir/Practitioner/${ids.P}`, tokenP)).status).toBe(200);
    });

    it('can add an Observation for A but not for B, and cannot create patients, delete or batch', async () => {
      const post = (resource: Json, path = `/fhir/${resource.resourceType}`) =>
        call(path, tokenP, {
          method: 'POST',
          body: JSON.stringify(resource),
          headers: { 'content-type': 'application/fhir+json' },
        });
      const forA = await post(observation(ids.A, 50));
      expect(forA.status).toBe(201);
      expect(forA.headers.get('location')).toMatch(new RegExp(`^${gw.url}/fhir/Observation/`));
      const forB = await post(observation(ids.B, 50));
      expect(forB.status).toBe(403);
      const newPatient = await post({
        resourceType: 'Patient',
        name: [{ family: 'X' }],
        telecom: [{ system: 'email', value: 'x@example.com' }],
      });
      expect(newPatient.status).toBe(403);
      expect((await call(`/fhir/Observation/${ids.obsA[0]}`, tokenP, { method: 'DELETE' })).status).toBe(403);
      expect((await post({ resourceType: 'Bundle', type: 'batch', entry: [] }, '/fhir')).status).toBe(403);
      const moved = {
        ...(await call(`/fhir/Observation/${ids.obsA[1]}`, tokenP)).json(),
        subject: { reference: `Patient/${ids.B}` },
      };
      const update = await call(`/fhir/Observation/${ids.obsA[1]}`, tokenP, {
        method: 'PUT',
        body: JSON.stringify(moved),
        headers: { 'content-type': 'application/fhir+json' },
      });
      expect(update.status).toBe(403);
    });
  });

  describe("findings of the review of practitioners' writes on real HAPI", () => {
    const write = (method: 'POST' | 'PUT', path: string, resource: Json) =>
      call(path, tokenP, {
        method,
        body: JSON.stringify(resource),
        headers: { 'content-type': 'application/fhir+json' },
      });
    const observationsOfA = async () =>
      (await call(`/fhir/Observation?subject=Patient/${ids.A}&_summary=count`, admin)).json().total as number;

    it('refuses a reference written as a search, an absolute URL or a urn anywhere in the resource, and writes nothing', async () => {
      const before = await observationsOfA();
      const probes: Json[] = [
        // HAPI resolves a search as a reference on a plain create: 201 / 404 / 412 told whether B has it
        { focus: [{ reference: `Condition?subject=Patient/${ids.B}&code=86406008` }] },
        { focus: [{ reference: `Patient?name=Canary&birthdate=1970-01-01` }] },
        { focus: [{ reference: `${gw.url}/fhir/Observation/${ids.obsB[0]}` }] },
        { hasMember: [{ reference: 'urn:uuid:0b6d1d8e-2f5a-4a77-9d51-9bb7e3f0c001' }] },
        {
          extension: [
            { url: 'http://example.org/x', valueReference: { reference: `Observation?subject=${ids.B}` } },
          ],
        },
        { derivedFrom: [{ reference: 'observation/1' }] },
        // HAPI reads a one-item array where a string belongs as that string (review R3)
        { derivedFrom: [{ reference: [`Condition?subject=Patient/${ids.B}&code=86406008`] }] },
        { hasMember: [{ reference: [`Observation/${ids.obsB[0]}`] }] },
        { hasMember: [{ reference: 7 }] },
        {
          contained: [
            {
              resourceType: 'Observation',
              id: 'c1',
              status: 'final',
              code: { text: 'x' },
              subject: { reference: `Patient?_id=${ids.B}` },
            },
          ],
          hasMember: [{ reference: '#c1' }],
        },
      ];
      for (const extra of probes) {
        const created = await write('POST', '/fhir/Observation', observation(ids.A, 70, extra));
        expect(created.status, JSON.stringify(extra)).toBe(403);
        noCanary(created.text);
        const updated = await write('PUT', `/fhir/Observation/${ids.obsA[0]}`, {
          ...observation(ids.A, 0, extra),
          id: ids.obsA[0],
        });
        expect(updated.status, JSON.stringify(extra)).toBe(403);
      }
      expect(await observationsOfA()).toBe(before);
    });

    it('refuses a write that names another patient in any element, or gives its patient as a bare string', async () => {
      const before = await observationsOfA();
      for (const extra of [
        // in the R4 compartment of B through performer: a record of B that B did not ask for
        { performer: [{ reference: `Patient/${ids.B}` }] },
        { performer: [{ reference: [`Patient/${ids.B}`] }] },
        { extension: [{ url: 'http://example.org/x', valueReference: { reference: `Patient/${ids.B}` } }] },
        // a string is no Reference: the server drops it, and the record belongs to nobody
        { subject: `Patient/${ids.A}` },
      ]) {
        const response = await write('POST', '/fhir/Observation', observation(ids.A, 71, extra));
        expect(response.status, JSON.stringify(extra)).toBe(403);
      }
      expect(await observationsOfA()).toBe(before);
    });

    it('still takes plain references to other resources, contained ones and their own patients', async () => {
      const response = await write(
        'POST',
        '/fhir/Observation',
        observation(ids.A, 72, {
          performer: [{ reference: `Practitioner/${ids.P}` }, { reference: `Patient/${ids.A}` }],
          derivedFrom: [{ reference: `Observation/${ids.obsA[1]}` }],
          contained: [{ resourceType: 'Observation', id: 'c1', status: 'final', code: { text: 'part' } }],
          hasMember: [{ reference: '#c1' }],
        }),
      );
      expect(response.status, response.text).toBe(201);
    });

    it('refuses a reference to a record they cannot read, existing or not, with one and the same 403 (HAPI answered 201 or 400)', async () => {
      const before = await observationsOfA();
      const answers = new Set<string>();
      for (const focus of [
        `Observation/${ids.obsB[0]}`,
        `Condition/${ids.conditionB}`,
        'Observation/987654321',
        'Encounter/no-such-encounter',
      ]) {
        const created = await write(
          'POST',
          '/fhir/Observation',
          observation(ids.A, 74, { focus: [{ reference: focus }] }),
        );
        expect(created.status, focus).toBe(403);
        noCanary(created.text);
        answers.add(JSON.stringify(created.json().issue));
        const updated = await write('PUT', `/fhir/Observation/${ids.obsA[0]}`, {
          ...observation(ids.A, 0, { focus: [{ reference: focus }] }),
          id: ids.obsA[0],
        });
        expect(updated.status, focus).toBe(403);
      }
      expect(answers.size).toBe(1);
      // a path as an id was read to check it and became a 500 (found by review): refused as not plain
      const dotted = await write(
        'POST',
        '/fhir/Observation',
        observation(ids.A, 74, { encounter: { reference: 'Encounter/.' } }),
      );
      expect(dotted.status).toBe(403);
      // each reference is one read upstream: a write of thousands would be thousands of reads
      const many = Array.from({ length: 51 }, (_, i) => ({ reference: `Observation/not-read-${i}` }));
      expect((await write('POST', '/fhir/Observation', observation(ids.A, 74, { focus: many }))).status).toBe(
        400,
      );
      // so is each patient named (400 before any is looked up: one panel lookup each, and an entry each in the bounded panel cache)
      const patients = Array.from({ length: 51 }, (_, i) => ({ reference: `Patient/not-asked-${i}` }));
      const crowd = await write('POST', '/fhir/Observation', observation(ids.A, 74, { performer: patients }));
      expect(crowd.status).toBe(400);
      expect(await observationsOfA()).toBe(before);
    });

    it('refuses to update a record that also names a patient who is not theirs, and leaves it as it was', async () => {
      const shared = await createAsAdmin(
        observation(ids.A, 73, { performer: [{ reference: `Patient/${ids.B}` }] }),
      );
      const response = await write('PUT', `/fhir/Observation/${shared}`, {
        ...observation(ids.A, 73),
        id: shared,
        status: 'amended',
      });
      expect(response.status).toBe(403);
      const now = (await call(`/fhir/Observation/${shared}`, admin)).json();
      expect(now.status).toBe('final');
      expect(now.performer).toEqual([{ reference: `Patient/${ids.B}` }]);
    });

    it('refuses AuditEvent and Provenance writes: a forged trail would read like the gateway’s own', async () => {
      const audit = {
        resourceType: 'AuditEvent',
        type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110' },
        recorded: '2026-01-01T00:00:00Z',
        agent: [{ who: { identifier: { system: 'urn:fhir-facade:user', value: 'admin' } }, requestor: true }],
        source: { observer: { display: 'fhir-facade' } },
        entity: [{ what: { reference: `Patient/${ids.A}` } }],
      };
      const provenance = {
        resourceType: 'Provenance',
        recorded: '2026-01-01T00:00:00Z',
        target: [{ reference: `Patient/${ids.A}` }],
        agent: [{ who: { reference: `Practitioner/${ids.P}` } }],
      };
      for (const resource of [audit, provenance]) {
        const response = await write('POST', `/fhir/${resource.resourceType}`, resource);
        expect(response.status, resource.resourceType).toBe(403);
      }
    });
  });

  describe('findings of the security review', () => {
    it('refuses If-None-Exist on a practitioner write: it would search other patients upstream', async () => {
      const response = await call('/fhir/Observation', tokenP, {
        method: 'POST',
        body: JSON.stringify(observation(ids.A, 60)),
        headers: {
          'content-type': 'application/fhir+json',
          'if-none-exist': `subject=Patient/${ids.B}&_id=${ids.obsB[0]}`,
        },
      });
      expect(response.status).toBe(403);
    });

    it('refuses a write whose patient reference is not a plain Patient/{id} of the caller', async () => {
      const sneaky = observation(ids.A, 61, {
        subject: { reference: `Patient/${ids.B}/_history/Patient/${ids.A}` },
      });
      const response = await call('/fhir/Observation', tokenP, {
        method: 'POST',
        body: JSON.stringify(sneaky),
        headers: { 'content-type': 'application/fhir+json' },
      });
      expect(response.status).toBe(403);
    });

    it('takes a request target in absolute form (RFC 9112 section 3.2.2) and judges its path the same', async () => {
      const origin = new URL(gw.url).origin;
      expect((await raw(`${origin}/fhir/Patient/${ids.A}`, tokenA)).status).toBe(200);
      expect((await raw(`http://elsewhere.example/fhir/Patient/${ids.A}`, tokenA)).status).toBe(200);
      expect((await raw(`${origin}/fhir/Patient/${ids.B}`, tokenA)).status).toBe(404);
      expect((await raw(`${origin}/fhir/Patient/${ids.A}/../${ids.B}`, tokenA)).status).toBe(400);
    });

    it('answers 400, not 500, for malformed percent-encoding in the path or the query', async () => {
      for (const path of ['/fhir/Patient/%E0%A4%A', '/fhir/%ZZ', '/fhir/Observation/abc%']) {
        expect((await raw(path, tokenA)).status, path).toBe(400);
      }
      for (const query of ['code=%ED%A0%80', 'code=%FF', 'code=100%', 'code=%E0%A4']) {
        expect((await raw(`/fhir/Observation?${query}`, tokenA)).status, query).toBe(400);
        expect((await raw(`/patient/observations?${query}`, tokenA)).status, query).toBe(400);
      }
    });

    it('answers 400, not 502, for impossible dates on the slim endpoint', async () => {
      // FHIR dates start at year 0001: the FHIR server refuses 0000 (found by fuzzing: a 502)
      for (const query of [
        'from=2026-99-99',
        'to=2026-13-45T99:99Z',
        'from=2026-02-30',
        'from=0000-01-01',
        'to=0000-12-31T10:00:00Z',
        // the FHIR server refuses a time without seconds and hour 24 (found by Review D2: a 502)
        'from=2024-01-01T10:00Z',
        'to=2024-01-01T10:00%2B01:00',
        'from=2024-01-01T24:00:00Z',
      ]) {
        expect((await call(`/patient/observations?${query}`, tokenA)).status, query).toBe(400);
      }
      // the full forms still work
      for (const query of [
        'from=2024-01-01',
        'from=2024-01-01T10:00:00Z',
        'to=2024-01-01T10:00:00.5%2B01:00',
      ])
        expect((await call(`/patient/observations?${query}`, tokenA)).status, query).toBe(200);
    });
  });

  describe('policy holes found running against other servers', () => {
    it('refuses _has for scoped roles: it would answer about Observations outside the compartment', async () => {
      const oracle = `/fhir/Patient?_id=${ids.A}&_has:Observation:performer:code=8867-4`;
      for (const token of [tokenA, tokenP]) {
        const response = await call(oracle, token);
        expect(response.status).toBe(400);
        expect(response.json().resourceType).toBe('OperationOutcome');
      }
    });

    it('caps the query as sent and as forwarded (URL and form as one): over 4 KiB is 414, more than 64 parameters 400, for every role', async () => {
      for (const token of [tokenA, admin]) {
        expect((await call(`/fhir/Observation?code=${'x'.repeat(8192)}`, token)).status).toBe(414);
        const many = Array.from({ length: 200 }, (_, i) => `code=${i}`).join('&'); // 200 parameters in 2 KiB
        expect((await call(`/fhir/Observation?${many}`, token)).status).toBe(400);
        // 1.4 KB as sent, 4.2 KB as encoded again for the upstream (HAPI's Jetty answered 431: a 502)
        expect((await call(`/fhir/Observation?code=${'|'.repeat(1400)}`, token)).status).toBe(414);
        const halves = await call(`/fhir/Observation/_search?code=${'x'.repeat(2100)}`, token, {
          method: 'POST',
          body: `code=${'y'.repeat(2100)}`,
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        });
        expect(halves.status).toBe(414);
      }
    });

    it('binds a cursor to its resource type and route, and lets clients add _count and _format', async () => {
      const first = (await call('/fhir/Observation?_count=5', tokenA)).json() as unknown as Bundle;
      const next = first.link?.find((l) => l.relation === 'next')?.url ?? '';
      const cursor = new URL(next).searchParams.get('_cursor') ?? '';
      expect((await call(`/fhir/Patient?_cursor=${cursor}`, tokenA)).status).toBe(400);
      expect((await call(`/fhir?_cursor=${cursor}`, tokenA)).status).toBe(400);
      expect((await call(`/patient/observations?cursor=${cursor}`, tokenA)).status).toBe(400);
      const withCompanions = await call(`/fhir/Observation?_cursor=${cursor}&_count=5&_format=json`, tokenA);
      expect(withCompanions.status).toBe(200);
      expect(((withCompanions.json() as unknown as Bundle).entry ?? []).length).toBe(5);
      expect((await call(`/fhir/Observation?_cursor=${cursor}&code=x`, tokenA)).status).toBe(400);
      // JSON only, on every request (tests/fhir/negotiation.test.ts)
      expect((await call(`/fhir/Observation?_cursor=${cursor}&_format=xml`, tokenA)).status).toBe(406);
      const slim = (await call('/patient/observations?limit=5', tokenA)).json() as { next_cursor: string };
      expect((await call(`/fhir/Observation?_cursor=${slim.next_cursor}`, tokenA)).status).toBe(400);
    });

    it('answers a practitioner update with a stale If-Match 412 on every upstream (real HAPI says 409), and applies a fresh one or *; a tag naming no version is 412, a malformed If-Match 400', async () => {
      const read = await call(`/fhir/Observation/${ids.obsA[2]}`, tokenP);
      const etag = read.headers.get('etag') ?? '';
      expect(etag).toMatch(/^W\/"[^"]+"$/);
      const put = (body: Json, ifMatch: string) =>
        call(`/fhir/Observation/${ids.obsA[2]}`, tokenP, {
          method: 'PUT',
          body: JSON.stringify(body),
          headers: { 'content-type': 'application/fhir+json', 'if-match': ifMatch },
        });
      const fresh = await put({ ...read.json(), status: 'amended' }, etag);
      expect(fresh.status).toBe(200);
      const stale = await put({ ...read.json(), status: 'corrected' }, etag);
      expect(stale.status).toBe(412);
      expect(stale.json().resourceType).toBe('OperationOutcome');
      // HAPI answered these with a 500 (a 502 here)
      expect((await put({ ...read.json(), status: 'corrected' }, 'xyz')).status).toBe(400);
      expect((await put({ ...read.json(), status: 'corrected' }, 'W/"abc"')).status).toBe(412);
      expect((await put({ ...read.json(), status: 'corrected' }, '*')).status).toBe(200);
    });

    it('answers _elements searches of scoped roles with entries, not an empty Bundle', async () => {
      for (const token of [tokenA, tokenP]) {
        const response = await call('/fhir/Observation?_elements=code&_count=5', token);
        expect(response.status).toBe(200);
        const entries = (response.json() as unknown as Bundle<Observation>).entry ?? [];
        expect(entries.length).toBe(5);
        expect(
          entries.every((e) => e.resource?.code && e.resource.subject?.reference === `Patient/${ids.A}`),
        ).toBe(true);
        noCanary(response.text);
      }
    });

    it('sends the practitioner narrowing as a chain, never as a list of patient ids', async () => {
      if (!gw.hapi) return; // the request lines are visible at the HAPI-flavoured front
      const before = gw.hapi.requestLines.length;
      await call('/fhir/Observation?_count=5', tokenP);
      await call('/fhir/Patient', tokenP);
      const sent = gw.hapi.requestLines.slice(before).map(decodeURIComponent);
      expect(sent.some((l) => l.includes(`subject:Patient.general-practitioner=Practitioner/${ids.P}`))).toBe(
        true,
      );
      expect(sent.some((l) => l.includes(`general-practitioner=Practitioner/${ids.P}`))).toBe(true);
    });
  });

  /**
   * The AuditEvents the gateway mirrors name their targets by logical reference
   * (`entity.what.identifier`), so a FHIR server with referential integrity (real HAPI) still lets
   * an admin delete an audited resource, and accepts the AuditEvent of the delete.
   */
  async function mirroredAuditEvents(action: string, reference: string): Promise<number> {
    for (let i = 0; i < 100; i++) {
      gw.deps.outbox.wake();
      const query = new URLSearchParams({ subtype: `urn:fhir-facade:audit-action|${action}`, _count: '200' });
      const found = ((await gw.deps.fhir.search('AuditEvent', query)).body?.entry ?? []).filter((e) =>
        JSON.stringify((e.resource as { entity?: unknown }).entity ?? []).includes(`"${reference}"`),
      );
      if (found.length > 0) return found.length;
      await new Promise((r) => setTimeout(r, 100));
    }
    return 0;
  }

  describe('admin', () => {
    it('passes everything through and audits every write', async () => {
      const all = (await call('/fhir/Observation?_count=100', admin)).json() as unknown as Bundle;
      expect((all.entry ?? []).length).toBeGreaterThan(A_OBSERVATIONS);
      const id = await createAsAdmin(observation(ids.B, 77));
      expect((await call(`/fhir/Observation/${id}`, admin, { method: 'DELETE' })).status).toBeLessThan(300);
      const audit = await gw.deps.db
        .selectFrom('audit_log')
        .selectAll()
        .where('target_fhir_id', '=', id)
        .execute();
      expect(audit.map((a) => a.action).sort()).toEqual(['fhir.create', 'fhir.delete']);
      const history = await call('/fhir/_history', admin);
      expect([200, 400, 404]).toContain(history.status);
    });

    it('refuses a Patient or Practitioner create that would bypass provisioning (POST /fhir/Patient/)', async () => {
      for (const type of ['Patient', 'Practitioner']) {
        const person = {
          resourceType: type,
          name: [{ family: 'Slashed' }],
          telecom: [{ system: 'email', value: `slashed-${type.toLowerCase()}@example.com` }],
        };
        const response = await call(`/fhir/${type}/`, admin, {
          method: 'POST',
          body: JSON.stringify(person),
          headers: { 'content-type': 'application/fhir+json' },
        });
        expect(response.status).toBe(400);
        expect(response.text).toContain(`POST /fhir/${type}`);
        const found = await gw.deps.fhir.search(type, new URLSearchParams({ family: 'Slashed' }));
        expect(found.body?.entry ?? []).toHaveLength(0);
      }
      const accounts = await gw.deps.db
        .selectFrom('users')
        .select('id')
        .where('email', 'like', 'slashed-%')
        .execute();
      expect(accounts).toHaveLength(0);
    });

    it('deletes a resource whose audit entry is already on the FHIR server, and mirrors the delete too', async () => {
      const id = await createAsAdmin(observation(ids.B, 78));
      expect(await mirroredAuditEvents('fhir.create', `Observation/${id}`)).toBe(1);
      expect((await call(`/fhir/Observation/${id}`, admin, { method: 'DELETE' })).status).toBeLessThan(300);
      expect(await mirroredAuditEvents('fhir.delete', `Observation/${id}`)).toBe(1);
    });

    it('serves a reduced CapabilityStatement under the gateway name with a bearer security section', async () => {
      const metadata = (await call('/fhir/metadata', undefined)).json() as Json & {
        rest: Json[];
        software: Json;
      };
      expect(metadata.resourceType).toBe('CapabilityStatement');
      expect(metadata.software).toEqual({ name: 'fhir-facade' });
      expect(JSON.stringify(metadata.rest[0]!.security)).toContain('Bearer');
    });
  });

  describe('a patient whose FHIR record vanished', () => {
    it('gets an empty list, not an error', async () => {
      const gone = await provision(gw, smtp, 'vanishing@example.com');
      const token = (
        (await (
          await signup(gw, { email: gone.email, access_code: gone.code, password: PASSWORD })
        ).json()) as { token: string }
      ).token;
      // the gateway keeps a record while its account exists (409); it vanishes on the FHIR server itself
      expect((await call(`/fhir/Patient/${gone.fhirId}`, admin, { method: 'DELETE' })).status).toBe(409);
      await gw.deps.fhir.delete('Patient', gone.fhirId);
      const response = await call('/patient/observations', token);
      expect(response.status).toBe(200);
      expect(response.json()).toEqual({ observations: [], next_cursor: null });
      expect((await call('/patient/profile', token)).status).toBe(404);
    });
  });

  it('never answers with the upstream base URL, in any body or header', () => {
    const upstream = gw.deps.fhir.baseUrl;
    const leaking = seen.filter((text) => text.includes(upstream) || text.includes(new URL(upstream).host));
    expect(leaking).toEqual([]);
    expect(seen.length).toBeGreaterThan(50);
  });
});
