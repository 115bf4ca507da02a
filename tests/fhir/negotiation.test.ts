import type { Bundle, CapabilityStatement, Observation, Patient } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';

/**
 * What a FHIR client negotiates with the passthrough, on every upstream flavour: the gateway
 * answers FHIR JSON only (406 for anything else, never the upstream's XML as a 502), HEAD is a
 * GET without the body, an unreadable If-Modified-Since is ignored (RFC 9110 section 13.1.3; HAPI
 * answered it with a 500), `Prefer: return=minimal` is honoured on writes, a write's body must be
 * JSON, and /fhir/metadata lists only the search parameters a scoped role may use.
 */

const observation = (patientId: string): Observation => ({
  resourceType: 'Observation',
  status: 'final',
  code: { text: 'Heart rate' },
  subject: { reference: `Patient/${patientId}` },
  valueQuantity: { value: 60, unit: '/min' },
});

describe.each(UPSTREAMS)('negotiating with the passthrough, %s upstream', (upstream) => {
  let gw: TestGateway;
  const ids = { gp: '', p: '', other: '', obs: '' };
  const tokens = { gp: '', p: '', admin: '' };

  beforeAll(async () => {
    gw = await startTestGateway({ upstream });
    const fhir = gw.deps.fhir;
    ids.gp = (
      await fhir.create('Practitioner', { resourceType: 'Practitioner', name: [{ family: 'Gp' }] })
    ).id;
    ids.p = (
      await fhir.create('Patient', {
        resourceType: 'Patient',
        name: [{ family: 'Negotiated' }],
        generalPractitioner: [{ reference: `Practitioner/${ids.gp}` }],
      })
    ).id;
    ids.other = (await fhir.create('Patient', { resourceType: 'Patient', name: [{ family: 'Other' }] })).id;
    ids.obs = (await fhir.create('Observation', observation(ids.p))).id;
    const gp = await gw.seedUser({ role: 'practitioner', fhirId: ids.gp });
    const patient = await gw.seedUser({ role: 'patient', fhirId: ids.p });
    tokens.gp = await gw.login(gp.email, gp.password);
    tokens.p = await gw.login(patient.email, patient.password);
    tokens.admin = await gw.adminToken();
  });

  afterAll(() => gw.close());

  const get = (path: string, token: string, headers: Record<string, string> = {}) =>
    gw.call(path, { token, headers });

  // a percent-encoded byte sequence that is no UTF-8 (a lone surrogate, a stray byte, a cut
  // sequence) reached HAPI as it came: its 500 was a 502 here
  it('answers 400 to a query value that is not UTF-8, for every role', async () => {
    for (const token of [tokens.p, tokens.gp, tokens.admin]) {
      for (const query of ['name=%ED%A0%80', 'name=%FF', 'name=Ann%E0%A4', '_filter=name%20eq%20%ED%B0%80']) {
        const response = await get(`/fhir/Patient?${query}`, token);
        expect(response.status, query).toBe(400);
        expect(((await response.json()) as { resourceType: string }).resourceType).toBe('OperationOutcome');
        const form = await gw.call('/fhir/Patient/_search', {
          method: 'POST',
          token,
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: query,
        });
        expect(form.status, `form ${query}`).toBe(400);
      }
    }
  });

  describe('POST _search (review R3)', () => {
    const form = (
      path: string,
      token: string,
      body: string,
      contentType = 'application/x-www-form-urlencoded',
    ) => gw.call(path, { method: 'POST', token, body, headers: { 'content-type': contentType } });

    it('names the form type it takes when sent another', async () => {
      const response = await form('/fhir/Observation/_search', tokens.p, 'code=x', 'text/plain');
      expect(response.status).toBe(415);
      expect(await response.text()).toContain('application/x-www-form-urlencoded');
    });

    it('takes _format and _pretty in the form as in the URL, and holds its _count to a whole number', async () => {
      for (const body of ['_format=json', '_pretty=true', '_format=application/fhir%2Bjson&_count=5']) {
        const response = await form('/fhir/Observation/_search', tokens.p, body);
        expect(response.status, body).toBe(200);
      }
      expect((await form('/fhir/Observation/_search', tokens.p, '_format=xml')).status).toBe(406);
      expect((await form('/fhir/Observation/_search', tokens.admin, '_count=abc')).status).toBe(400);
    });

    it('refuses a system-level POST /fhir/_search as its GET is refused: 403 for scoped roles, 400 for an admin', async () => {
      for (const token of [tokens.p, tokens.gp]) {
        const response = await form('/fhir/_search', token, '_type=Patient');
        expect(response.status).toBe(403);
      }
      const admin = await form('/fhir/_search', tokens.admin, '_type=Patient');
      expect(admin.status).toBe(400);
      expect(await admin.text()).toContain('GET /fhir?_type=');
    });
  });

  it("says what a practitioner's patient id must be, not a schema library's default", async () => {
    const response = await get(`/practitioner/patients/${ids.p},${ids.other}/observations`, tokens.gp);
    expect(response.status).toBe(400);
    const text = await response.text();
    expect(text).toContain('must be one FHIR id');
    expect(text).not.toContain('regex');
  });

  it('answers 406 to a client that takes no JSON, and JSON to one that does', async () => {
    for (const token of [tokens.p, tokens.admin]) {
      for (const accept of [
        'application/fhir+xml',
        'text/html',
        'application/fhir+json;q=0, application/xml',
      ]) {
        const refused = await get(`/fhir/Patient/${ids.p}`, token, { accept });
        expect(refused.status, accept).toBe(406);
        expect(((await refused.json()) as { resourceType: string }).resourceType).toBe('OperationOutcome');
      }
      for (const accept of [
        'application/fhir+xml;q=1, application/fhir+json;q=0.9',
        '*/*',
        'application/json',
        'application/fhir+json; fhirVersion=4.0',
      ]) {
        const fine = await get(`/fhir/Patient/${ids.p}`, token, { accept });
        expect(fine.status, accept).toBe(200);
        expect(fine.headers.get('content-type')).toMatch(/^application\/fhir\+json/);
      }
    }
  });

  it('takes _format meaning JSON on any request and refuses any other with 406 (HAPI would answer XML)', async () => {
    for (const token of [tokens.p, tokens.gp, tokens.admin]) {
      for (const format of ['json', 'application/fhir%2Bjson', 'application/fhir+json', 'application/json']) {
        const search = await get(
          `/fhir/Observation?subject=Patient/${ids.p}&_format=${format}&_pretty=true`,
          token,
        );
        expect(search.status, format).toBe(200);
        expect(((await search.json()) as Bundle).entry?.length).toBe(1);
      }
      for (const path of [
        `/fhir/Patient/${ids.p}?_format=xml`,
        '/fhir/Observation?_format=application/fhir%2Bxml',
      ]) {
        const refused = await get(path, token);
        expect(refused.status, path).toBe(406);
      }
    }
  });

  it('answers If-None-Match: * on a read 304 when the record is there for the caller, and 404 when it is not', async () => {
    for (const token of [tokens.p, tokens.gp, tokens.admin]) {
      const response = await get(`/fhir/Observation/${ids.obs}`, token, { 'if-none-match': '*' });
      expect(response.status).toBe(304);
      expect(response.headers.get('etag')).toMatch(/^W\/"[^"]+"$/);
      expect(await response.text()).toBe('');
    }
    // another patient's record: as absent as a missing one, whatever the condition
    expect((await get(`/fhir/Patient/${ids.other}`, tokens.p, { 'if-none-match': '*' })).status).toBe(404);
    expect(
      (await get('/fhir/Observation/no-such-record', tokens.admin, { 'if-none-match': '*' })).status,
    ).toBe(404);
  });

  it('answers HEAD like GET without the body, for every role, in scope or not', async () => {
    const own = await gw.call(`/fhir/Patient/${ids.p}`, { method: 'HEAD', token: tokens.p });
    expect(own.status).toBe(200);
    expect(own.headers.get('etag')).toMatch(/^W\/"/);
    expect(await own.text()).toBe('');
    const search = await gw.call('/fhir/Observation', { method: 'HEAD', token: tokens.gp });
    expect(search.status).toBe(200);
    const elsewhere = await gw.call(`/fhir/Patient/${ids.other}`, { method: 'HEAD', token: tokens.p });
    expect(elsewhere.status).toBe(404);
    const asAdmin = await gw.call(`/fhir/Patient/${ids.other}`, { method: 'HEAD', token: tokens.admin });
    expect(asAdmin.status).toBe(200);
    await gw.deps.auditTrail.flush();
    const writes = await gw.deps.db
      .selectFrom('audit_log')
      .select('action')
      .where('target_fhir_id', '=', ids.other)
      .where('action', 'not in', ['fhir.read', 'fhir.search'])
      .execute();
    expect(writes).toEqual([]);
  });

  it('ignores an If-Modified-Since that is not a date, and honours one that is', async () => {
    for (const token of [tokens.p, tokens.admin]) {
      const garbage = await get(`/fhir/Patient/${ids.p}`, token, { 'if-modified-since': 'yesterday-ish' });
      expect(garbage.status).toBe(200);
      const later = new Date(Date.now() + 3_600_000).toUTCString();
      const unchanged = await get(`/fhir/Patient/${ids.p}`, token, { 'if-modified-since': later });
      expect(unchanged.status).toBe(304);
      expect(unchanged.headers.get('content-type')).toBeNull();
      // RFC 9110 section 15.4.5: the ETag a 200 would carry (HAPI leaves it out)
      const current = (await get(`/fhir/Patient/${ids.p}`, token)).headers.get('etag');
      expect(unchanged.headers.get('etag')).toBe(current);
    }
  });

  it('honours Prefer: return=minimal (201, Location, no body) and return=OperationOutcome on a practitioner write', async () => {
    const create = (prefer?: string) =>
      gw.call('/fhir/Observation', {
        method: 'POST',
        token: tokens.gp,
        json: observation(ids.p),
        ...(prefer ? { headers: { prefer } } : {}),
      });
    const minimal = await create('return=minimal');
    expect(minimal.status).toBe(201);
    expect(minimal.headers.get('location')).toMatch(/^http:\/\/gateway[^/]*\.test\/fhir\/Observation\//);
    expect(await minimal.text()).toBe('');
    // no body, so no media type (RFC 9110 section 8.3: Content-Type describes the content)
    expect(minimal.headers.get('content-type')).toBeNull();
    const whole = await create();
    expect(((await whole.json()) as Observation).resourceType).toBe('Observation');
    const outcome = await create('return=OperationOutcome');
    expect(outcome.status).toBe(201);
    expect(((await outcome.json()) as { resourceType: string }).resourceType).toBe('OperationOutcome');
  });

  it('refuses a practitioner write whose body is not declared JSON in UTF-8 with 415, and stores nothing', async () => {
    const before = await get(`/fhir/Observation?subject=Patient/${ids.p}&_summary=count`, tokens.gp);
    const count = ((await before.json()) as Bundle).total;
    for (const contentType of [
      'text/plain',
      'application/x-www-form-urlencoded',
      'application/fhir+xml',
      // the body would be read as UTF-8: in UTF-16 it is garbage, and RFC 8259 says JSON is UTF-8
      'application/fhir+json; charset=utf-16',
    ]) {
      const refused = await gw.call('/fhir/Observation', {
        method: 'POST',
        token: tokens.gp,
        body: JSON.stringify(observation(ids.p)),
        headers: { 'content-type': contentType },
      });
      expect(refused.status, contentType).toBe(415);
    }
    const after = await get(`/fhir/Observation?subject=Patient/${ids.p}&_summary=count`, tokens.gp);
    expect(((await after.json()) as Bundle).total).toBe(count);
  });

  it('refuses an admin write declared in a charset other than UTF-8 with 415 (it would be stored garbled)', async () => {
    const body = JSON.stringify({ resourceType: 'Basic', code: { text: 'Zoë ä €' } });
    for (const contentType of [
      'application/fhir+json; charset=iso-8859-1',
      'application/json; charset="windows-1252"',
    ]) {
      const refused = await gw.call('/fhir/Basic', {
        method: 'POST',
        token: tokens.admin,
        body,
        headers: { 'content-type': contentType },
      });
      expect(refused.status, contentType).toBe(415);
    }
    const stored = await gw.call('/fhir/Basic', {
      method: 'POST',
      token: tokens.admin,
      body,
      headers: { 'content-type': 'application/fhir+json; charset=UTF-8' },
    });
    expect(stored.status).toBe(201);
    expect(((await stored.json()) as { code: { text: string } }).code.text).toBe('Zoë ä €');
  });

  it('answers 400 to a _count that is no whole number, for every role and on operations (HAPI: 500)', async () => {
    for (const [path, token] of [
      [`/fhir/Patient/${ids.p}/$everything?_count=abc`, tokens.admin],
      ['/fhir/Observation?_count=-1', tokens.p],
      ['/fhir/Observation?_count=1.5', tokens.gp],
    ] as const) {
      const response = await get(path, token);
      expect(response.status, path).toBe(400);
      expect(((await response.json()) as { resourceType: string }).resourceType).toBe('OperationOutcome');
    }
    expect((await get('/fhir/Observation?_count=5', tokens.p)).status).toBe(200);
  });

  it("stores a practitioner's write digit for digit, as an admin's of the same body (FHIR decimals keep their precision)", async () => {
    const text = JSON.stringify(observation(ids.p)).replace(
      '"valueQuantity":{"value":60,"unit":"/min"}',
      '"valueQuantity":{"value":1.50,"unit":"mmol/L"},"referenceRange":[{"low":{"value":0.1234567890123456789},"high":{"value":98765432109876543210}}]',
    );
    expect(text).toContain('1.50');
    const numbersStored = async (token: string) => {
      const created = await gw.call('/fhir/Observation', {
        method: 'POST',
        token,
        body: text,
        headers: { 'content-type': 'application/fhir+json' },
      });
      expect(created.status).toBe(201);
      const { id } = (await created.json()) as Observation;
      const stored = await (await get(`/fhir/Observation/${id}`, tokens.admin)).text();
      return [...stored.matchAll(/"value"\s*:\s*(-?[0-9][0-9.eE+-]*)/g)].map((m) => m[1]);
    };
    const asAdmin = await numbersStored(tokens.admin);
    expect(asAdmin).toHaveLength(3);
    // JSON.stringify of the checked object sent 1.5, 0.12345678901234568 and 98765432109876540000
    expect(await numbersStored(tokens.gp)).toEqual(asAdmin);
  });

  it('refuses a number no double holds and a member named twice with 400, storing nothing', async () => {
    const count = async () =>
      (
        (await (
          await get(`/fhir/Observation?subject=Patient/${ids.p}&_summary=count`, tokens.gp)
        ).json()) as Bundle
      ).total;
    const before = await count();
    const resource = JSON.stringify(observation(ids.p));
    const bodies = [
      // JSON.parse reads Infinity (sent as null); HAPI answered the text itself with a 500
      resource.replace('"value":60', '"value":1e400'),
      // the check reads the last subject, a server may read the first
      resource.replace('"subject":', `"subject":{"reference":"Patient/${ids.other}"},"subject":`),
    ];
    for (const [i, body] of bodies.entries()) {
      for (const token of i === 0 ? [tokens.gp, tokens.admin] : [tokens.gp]) {
        const refused = await gw.call('/fhir/Observation', {
          method: 'POST',
          token,
          body,
          headers: { 'content-type': 'application/fhir+json' },
        });
        expect(refused.status, body).toBe(400);
      }
    }
    expect(await count()).toBe(before);
  });

  it('answers a practitioner write nested thousands of levels deep with a 4xx, never a 500', async () => {
    // written out as text: JSON.stringify itself overflows on it
    const depth = 5_000;
    const extension = `${'{"url":"http://example.org/nested","extension":['.repeat(depth)}{"url":"http://example.org/leaf","valueString":"x"}${']}'.repeat(depth)}`;
    const resource = JSON.stringify(observation(ids.p));
    const response = await gw.call('/fhir/Observation', {
      method: 'POST',
      token: tokens.gp,
      body: `${resource.slice(0, -1)},"extension":[${extension}]}`,
      headers: { 'content-type': 'application/fhir+json' },
    });
    expect(response.status).toBeGreaterThanOrEqual(400);
    expect(response.status).toBeLessThan(500);
  });

  it("answers an admin's batch, raw create or PATCH nested thousands deep 400, never a 500", async () => {
    const depth = 5_000;
    const deep = `${'{"url":"http://example.org/nested","extension":['.repeat(depth)}{"url":"http://example.org/leaf"}${']}'.repeat(depth)}`;
    const send = (method: string, path: string, body: string, contentType = 'application/fhir+json') =>
      gw.call(path, { method, token: tokens.admin, body, headers: { 'content-type': contentType } });
    const batch = await send(
      'POST',
      '/fhir',
      `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"PUT","url":"Observation/${ids.obs}","ifMatch":"*"},"resource":{"resourceType":"Observation","id":"${ids.obs}","status":"final","code":{"text":"x"},"extension":[${deep}]}}]}`,
    );
    expect(batch.status).toBe(400);
    const create = await send(
      'POST',
      '/fhir/Patient',
      `{"resourceType":"Patient","name":[{"family":"Deep"}],"telecom":[{"system":"email","value":"deep@example.com"}],"extension":[${deep}]}`,
    );
    expect(create.status).toBe(400);
    const patch = await send(
      'PATCH',
      `/fhir/Observation/${ids.obs}`,
      `[${deep}]`,
      'application/json-patch+json',
    );
    expect(patch.status).toBe(400);
  });

  it('answers a near or _offset the server cannot read 400 for every role (HAPI answered 500)', async () => {
    for (const near of ['abc', '|||', '91|181|-1|km'])
      for (const token of [tokens.p, tokens.gp, tokens.admin]) {
        const response = await get(`/fhir/Location?near=${encodeURIComponent(near)}`, token);
        expect(response.status, near).toBe(400);
      }
    const offset = await get('/fhir/Observation?_offset=-5', tokens.admin);
    expect(offset.status).toBe(400);
  });

  it('answers a number no server reads at once 400 for every role (HAPI spent ~50 s on 9e9999999)', async () => {
    for (const query of [
      'value-quantity=9e9999999',
      'value-quantity=9e999999|http://unitsofmeasure.org|mg',
      'code-value-quantity=http://loinc.org|8867-4$gt9e9999999',
    ])
      for (const token of [tokens.p, tokens.gp, tokens.admin]) {
        const response = await get(`/fhir/Observation?${query}`, token);
        expect(response.status, query).toBe(400);
      }
  });

  it('answers a search naming a value set the server does not know 400 for every role (HAPI says 404)', async () => {
    for (const token of [tokens.p, tokens.gp, tokens.admin]) {
      for (const modifier of ['in', 'not-in']) {
        const response = await get(
          `/fhir/Observation?code:${modifier}=http://example.org/ValueSet/unknown`,
          token,
        );
        expect(response.status).toBe(400);
        expect(await response.text()).not.toContain('example.org');
      }
    }
  });

  it('answers a search with a modifier the server disabled 400 for every role (HAPI says 405 to :contains)', async () => {
    for (const token of [tokens.p, tokens.gp, tokens.admin]) {
      const response = await get('/fhir/Patient?name:contains=a', token);
      // the embedded server and the fake answer the modifier; real HAPI disables it by default
      expect([200, 400]).toContain(response.status);
      if (upstream === 'hapi-real') expect(response.status).toBe(400);
      expect(response.headers.get('content-type')).toContain('application/fhir+json');
    }
  });

  it('cuts a scoped read to _elements or _summary after the check, tagged SUBSETTED; refuses what it cannot honour with 400', async () => {
    const subsetted = {
      system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue',
      code: 'SUBSETTED',
    };
    for (const token of [tokens.p, tokens.gp]) {
      // subject is not asked for (the check read it upstream all the same): the read is still 200
      const elements = await get(`/fhir/Observation/${ids.obs}?_elements=code`, token);
      expect(elements.status).toBe(200);
      const cut = (await elements.json()) as Observation;
      expect(cut.code?.text).toBe('Heart rate');
      expect(cut.status).toBe('final'); // mandatory: always kept
      expect(cut.id).toBe(ids.obs);
      expect(cut.subject).toBeUndefined();
      expect(cut.valueQuantity).toBeUndefined();
      expect(cut.meta?.tag).toContainEqual(subsetted);
      const choice = (await (
        await get(`/fhir/Observation/${ids.obs}?_elements=value`, token)
      ).json()) as Observation;
      expect(choice.valueQuantity?.value).toBe(60);
      const summary = (await (await get(`/fhir/Patient/${ids.p}?_summary=true`, token)).json()) as Patient;
      expect(summary.name?.[0]?.family).toBe('Negotiated');
      expect(summary.meta?.tag).toContainEqual(subsetted);
      const data = (await (
        await get(`/fhir/Observation/${ids.obs}?_summary=data`, token)
      ).json()) as Observation;
      expect(data.valueQuantity?.value).toBe(60);
      const whole = (await (
        await get(`/fhir/Observation/${ids.obs}?_summary=false`, token)
      ).json()) as Observation;
      expect(whole.subject?.reference).toBe(`Patient/${ids.p}`);
      expect(whole.meta?.tag ?? []).not.toContainEqual(subsetted);
      for (const query of [
        '_summary=count',
        '_summary=maybe',
        '_elements=code;drop',
        '_elements=code&_summary=true',
      ]) {
        expect((await get(`/fhir/Observation/${ids.obs}?${query}`, token)).status).toBe(400);
      }
    }
    // out of scope stays 404 whatever is asked
    expect((await get(`/fhir/Patient/${ids.other}?_elements=name`, tokens.p)).status).toBe(404);
  });

  it('is ready on this server with the summary of its CapabilityStatement (what /readyz asks for)', async () => {
    const summary = await gw.deps.fhir.capabilities({ summary: true });
    expect(summary.resourceType).toBe('CapabilityStatement');
    const ready = await gw.call('/readyz');
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready', checks: { fhir: 'ok' } });
  });

  it('answers /fhir/metadata in JSON, and 406 to a client that takes no JSON', async () => {
    for (const [path, accept, status] of [
      ['/fhir/metadata', 'application/fhir+xml', 406],
      ['/fhir/metadata?_format=xml', 'application/fhir+json', 406],
      ['/fhir/metadata?_format=json', 'application/fhir+xml', 200],
      ['/fhir/metadata', 'application/fhir+json', 200],
      ['/fhir/metadata', '*/*', 200],
    ] as const) {
      const response = await gw.call(path, { headers: { accept } });
      expect(response.status, `${path} ${accept}`).toBe(status);
      const body = (await response.json()) as { resourceType: string };
      expect(body.resourceType).toBe(status === 200 ? 'CapabilityStatement' : 'OperationOutcome');
    }
  });

  it('lists in /fhir/metadata only the search parameters a scoped role may use', async () => {
    const metadata = (await (await gw.call('/fhir/metadata')).json()) as CapabilityStatement;
    const names = (metadata.rest?.[0]?.resource ?? []).flatMap((r) =>
      (r.searchParam ?? []).map((p) => p.name),
    );
    expect(names.length).toBeGreaterThan(0);
    for (const refused of ['_has', '_list', '_source', '_filter', '_text', '_content', '_query', '_type'])
      expect(names).not.toContain(refused);
    const patient = (await (await get(`/fhir/Patient/${ids.p}`, tokens.p)).json()) as Patient;
    expect(patient.id).toBe(ids.p);
  });

  // a client reads the statement to decide what to offer: no write the gateway would refuse every scoped role
  it('lists create and update in /fhir/metadata only on the types a practitioner may write', async () => {
    const metadata = (await (await gw.call('/fhir/metadata')).json()) as CapabilityStatement;
    const interactions = new Map<string, string[]>(
      (metadata.rest?.[0]?.resource ?? []).map((r) => [r.type, (r.interaction ?? []).map((i) => i.code)]),
    );
    expect(interactions.get('Observation')).toEqual(expect.arrayContaining(['read', 'create', 'update']));
    for (const readOnly of ['Patient', 'Practitioner', 'AuditEvent', 'Provenance'].filter((t) =>
      interactions.has(t),
    )) {
      expect(interactions.get(readOnly)).toContain('read');
      expect(interactions.get(readOnly)).not.toContain('create');
      expect(interactions.get(readOnly)).not.toContain('update');
    }
    expect(interactions.has('Patient')).toBe(true);
  });
});
