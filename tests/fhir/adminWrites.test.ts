import type { Patient } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';

/**
 * An admin's forwarded writes, found by review on real HAPI: a person (Patient, Practitioner) is
 * never made or unmade beside provisioning, which pairs every such record with its account, and a
 * write the FHIR server cannot read is the caller's 400 (HAPI answered each with a 500, our 502).
 */
describe.each(UPSTREAMS)("an admin's forwarded writes, %s upstream", (upstream) => {
  let gw: TestGateway;
  let token = '';
  const ids = { withAccount: '', withoutAccount: '', obs: '' };

  beforeAll(async () => {
    gw = await startTestGateway({ upstream });
    token = await gw.adminToken();
    const fhir = gw.deps.fhir;
    ids.withAccount = (
      await fhir.create('Patient', { resourceType: 'Patient', name: [{ family: 'Held' }] })
    ).id;
    ids.withoutAccount = (
      await fhir.create('Patient', { resourceType: 'Patient', name: [{ family: 'Loose' }] })
    ).id;
    ids.obs = (
      await fhir.create('Observation', {
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'weight' },
      })
    ).id;
    await gw.seedUser({ role: 'patient', fhirId: ids.withAccount });
  });

  afterAll(() => gw.close());

  const send = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    gw.call(path, {
      method,
      token,
      headers: { 'content-type': 'application/fhir+json', ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
  const status = async (path: string) => (await gw.call(path, { token })).status;
  // counted by a family name of this run only: the real HAPI server is shared with files that run at the same time
  const family = `Nobody${Math.random().toString(36).slice(2, 10).replace(/\d/g, 'x')}`;
  const patients = async () => {
    const counted = await gw.call(`/fhir/Patient?family=${family}&_summary=count`, { token });
    return ((await counted.json()) as { total: number }).total;
  };

  it('keeps a Patient while an account is linked to it (409), and deletes one without an account', async () => {
    const refused = await send('DELETE', `/fhir/Patient/${ids.withAccount}`);
    expect(refused.status).toBe(409);
    expect(await status(`/fhir/Patient/${ids.withAccount}`)).toBe(200);
    const batch = await send('POST', '/fhir', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [{ request: { method: 'DELETE', url: `Patient/${ids.withAccount}` } }],
    });
    expect(batch.status).toBe(409);
    expect(await status(`/fhir/Patient/${ids.withAccount}`)).toBe(200);
    // R4 writes no version: real HAPI took this for a delete of the record itself
    for (const path of [`Patient/${ids.withAccount}/_history/1`, `Patient/${ids.withAccount}/_history`]) {
      const versionDelete = await send('DELETE', `/fhir/${path}`);
      expect(versionDelete.status).toBe(405);
      expect(versionDelete.headers.get('allow')).toBe('GET, HEAD');
    }
    expect(await status(`/fhir/Patient/${ids.withAccount}`)).toBe(200);
    expect((await send('DELETE', `/fhir/Patient/${ids.withoutAccount}`)).status).toBeLessThan(300);
  });

  it('answers a PATCH with the ETag of the version it made, good for the next If-Match (HAPI sends none)', async () => {
    const patched = await send(
      'PATCH',
      `/fhir/Observation/${ids.obs}`,
      '[{"op":"replace","path":"/status","value":"amended"}]',
      { 'content-type': 'application/json-patch+json' },
    );
    expect(patched.status).toBe(200);
    const body = (await patched.json()) as { meta?: { versionId?: string } };
    const etag = patched.headers.get('etag');
    expect(etag).toBe(`W/"${body.meta?.versionId}"`);
    const next = await send(
      'PUT',
      `/fhir/Observation/${ids.obs}`,
      { resourceType: 'Observation', id: ids.obs, status: 'final', code: { text: 'weight' } },
      { 'if-match': etag ?? '' },
    );
    expect(next.status).toBe(200);
  });

  it('answers an update that creates 201 with a Location, as a create (R4 http.html#update; HAPI sends Content-Location alone)', async () => {
    const value = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const created = await send(
      'PUT',
      `/fhir/Observation?identifier=${encodeURIComponent(`urn:test|${value}`)}`,
      {
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'created by update' },
        identifier: [{ system: 'urn:test', value }],
      },
    );
    expect(created.status).toBe(201);
    const location = created.headers.get('location') ?? '';
    expect(location).toMatch(/\/fhir\/Observation\/[A-Za-z0-9\-.]+(\/_history\/[A-Za-z0-9\-.]+)?$/);
    expect(location.startsWith(gw.deps.config.publicBaseUrl)).toBe(true);
    const id = /Observation\/([^/]+)/.exec(location)?.[1];
    expect(((await created.json()) as { id: string }).id).toBe(id);
  });

  it('creates no person beside provisioning: no update-as-create, conditional write or batch create', async () => {
    const before = await patients();
    expect(before).toBe(0);
    const loose: Patient = { resourceType: 'Patient', name: [{ family }] };
    const attempts = [
      await send('PUT', '/fhir/Patient/no-such-person', { ...loose, id: 'no-such-person' }),
      await send('PUT', '/fhir/Patient?name=Nobodyxyz', loose),
      await send('DELETE', '/fhir/Practitioner?name=Anyone'),
      await send('POST', '/fhir', {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [{ resource: loose, request: { method: 'POST', url: 'Patient' } }],
      }),
      await send('POST', '/fhir', {
        resourceType: 'Bundle',
        type: 'batch',
        entry: [{ resource: loose, request: { method: 'PUT', url: 'Patient?name=Nobodyxyz' } }],
      }),
      await send('POST', '/fhir', {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          {
            resource: { ...loose, id: 'no-such-person' },
            request: { method: 'PUT', url: 'Patient/no-such-person' },
          },
        ],
      }),
    ];
    // URLs HAPI takes but a check that reads `Type/id` would not (found by review), and a body of another type
    for (const [method, url, resource] of [
      ['POST', '/Patient', loose],
      ['POST', 'http://elsewhere.example/fhir/Patient', loose],
      ['POST', 'Basic', loose],
      ['DELETE', `/Patient/${ids.withAccount}`, undefined],
      ['PUT', `Patient/./../Patient/${ids.withAccount}`, loose],
    ] as const) {
      const entry = { request: { method, url }, ...(resource ? { resource } : {}) };
      attempts.push(await send('POST', '/fhir', { resourceType: 'Bundle', type: 'batch', entry: [entry] }));
    }
    expect(attempts.map((a) => a.status)).toEqual(Array(11).fill(400));
    expect(await status(`/fhir/Patient/${ids.withAccount}`)).toBe(200);
    expect(await patients()).toBe(before);
    expect(await status('/fhir/Patient/no-such-person')).toBe(404);
    // replacing an existing person by id still works, alone and in a transaction
    const record = (await (await gw.call(`/fhir/Patient/${ids.withAccount}`, { token })).json()) as Patient;
    expect(
      (await send('PUT', `/fhir/Patient/${ids.withAccount}`, { ...record, gender: 'other' })).status,
    ).toBe(200);
    const transaction = await send('POST', '/fhir', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          resource: { ...record, gender: 'unknown' },
          request: { method: 'PUT', url: `Patient/${ids.withAccount}` },
        },
      ],
    });
    expect(transaction.status).toBe(200);
  });

  it('records every entry of a batch as if it came alone: the write with its record, the read with its patient', async () => {
    const doomed = (
      await gw.deps.fhir.create('Observation', {
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'x' },
      })
    ).id;
    const batch = await send('POST', '/fhir', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        {
          resource: { resourceType: 'Observation', status: 'final', code: { text: 'batched' } },
          request: { method: 'POST', url: 'Observation' },
        },
        { request: { method: 'DELETE', url: `Observation/${doomed}` } },
        { request: { method: 'GET', url: `Patient/${ids.withAccount}` } },
      ],
    });
    expect(batch.status).toBe(200);
    await gw.deps.auditTrail.flush();
    const rows = await gw.deps.db
      .selectFrom('audit_log')
      .select(['action', 'outcome', 'target_fhir_type', 'target_fhir_id', 'patient_id', 'detail'])
      .where('request_id', '=', batch.headers.get('x-request-id') ?? '')
      .execute();
    const entries = rows.filter((r) => JSON.stringify(r.detail).includes('batch_entry'));
    const created = entries.find((r) => r.action === 'fhir.create');
    expect(created).toMatchObject({ outcome: 'success', target_fhir_type: 'Observation' });
    expect(created?.target_fhir_id).toBeTruthy();
    expect(entries).toContainEqual(
      expect.objectContaining({ action: 'fhir.delete', outcome: 'success', target_fhir_id: doomed }),
    );
    expect(entries).toContainEqual(
      expect.objectContaining({
        action: 'fhir.read',
        target_fhir_type: 'Patient',
        patient_id: ids.withAccount,
      }),
    );
    expect(rows.some((r) => r.action === 'fhir.batch')).toBe(true);
  });

  it('answers a method FHIR does not have (PROPFIND, MKCOL) 405 with the FHIR methods, never forwarding it', async () => {
    for (const method of ['PROPFIND', 'MKCOL', 'LOCK']) {
      const response = await gw.call(`/fhir/Observation/${ids.obs}`, { method, token });
      expect(response.status, method).toBe(405);
      expect(response.headers.get('allow')).toBe('GET, HEAD, POST, PUT, PATCH, DELETE');
    }
  });

  it('refuses If-None-Match on a write (400), which no server honoured: `*` replaced the record', async () => {
    const path = `/fhir/Observation/${ids.obs}`;
    const before = (await (await gw.call(path, { token })).json()) as { meta: { versionId: string } };
    for (const tag of ['*', `W/"${before.meta.versionId}"`]) {
      const put = await send(
        'PUT',
        path,
        { resourceType: 'Observation', id: ids.obs, status: 'amended', code: { text: 'weight' } },
        { 'if-none-match': tag },
      );
      expect(put.status, tag).toBe(400);
    }
    const entry = await send('POST', '/fhir', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        {
          request: { method: 'PUT', url: `Observation/${ids.obs}`, ifNoneMatch: '*' },
          resource: { resourceType: 'Observation', id: ids.obs, status: 'amended', code: { text: 'weight' } },
        },
      ],
    });
    expect(entry.status).toBe(400);
    const after = (await (await gw.call(path, { token })).json()) as { meta: { versionId: string } };
    expect(after.meta.versionId).toBe(before.meta.versionId);
    // on a read it still means what it means there
    const tag = `W/"${before.meta.versionId}"`;
    expect((await gw.call(path, { token, headers: { 'if-none-match': tag } })).status).toBe(304);
    expect((await gw.call(path, { token, method: 'HEAD', headers: { 'if-none-match': tag } })).status).toBe(
      304,
    );
  });

  it('refuses a patch that would rename the record (400): no second Patient, none without an account', async () => {
    const copy = `copy-${upstream}-${Date.now()}`;
    const jsonPatch = (ops: unknown) =>
      send('PATCH', `/fhir/Patient/${ids.withAccount}`, JSON.stringify(ops), {
        'content-type': 'application/json-patch+json',
      });
    const fhirPathPatch = (...part: unknown[]) =>
      send('PATCH', `/fhir/Patient/${ids.withAccount}`, {
        resourceType: 'Parameters',
        parameter: [{ name: 'operation', part }],
      });
    const refused = [
      await jsonPatch([{ op: 'replace', path: '/id', value: copy }]),
      await jsonPatch([{ op: 'replace', path: '/resourceType', value: 'Basic' }]),
      await jsonPatch([{ op: 'replace', path: '', value: { resourceType: 'Patient', id: copy } }]),
      await jsonPatch([{ op: 'move', from: '/id', path: '/language' }]),
      await fhirPathPatch(
        { name: 'type', valueCode: 'replace' },
        { name: 'path', valueString: 'Patient.id' },
        { name: 'value', valueId: copy },
      ),
      await send('POST', '/fhir', {
        resourceType: 'Bundle',
        type: 'batch',
        entry: [
          {
            request: { method: 'PATCH', url: `Patient/${ids.withAccount}` },
            resource: {
              resourceType: 'Binary',
              contentType: 'application/json-patch+json',
              data: Buffer.from(JSON.stringify([{ op: 'replace', path: '/id', value: copy }])).toString(
                'base64',
              ),
            },
          },
        ],
      }),
    ];
    // the patcher steps over `__proto__`: the pointer reached /id
    refused.push(await jsonPatch([{ op: 'replace', path: '/__proto__/id', value: copy }]));
    expect(refused.map((r) => r.status)).toEqual([400, 400, 400, 400, 400, 400, 400]);
    expect((await gw.call(`/fhir/Patient/${copy}`, { token })).status).toBe(404);
    const added = await fhirPathPatch(
      { name: 'type', valueCode: 'add' },
      { name: 'path', valueString: 'Patient' },
      { name: 'name', valueString: 'active' },
      { name: 'value', valueBoolean: true },
    );
    // the embedded engine reads JSON Patch only; an add beside the id passes the check
    expect(added.status).not.toBe(500);
  });

  it('answers a write the server cannot read 400 (or 405), and changes nothing', async () => {
    const patch = (body: string, contentType: string, path = `/fhir/Observation/${ids.obs}`) =>
      send('PATCH', path, body, { 'content-type': contentType });
    const refused = [
      await patch('', 'application/json-patch+json'),
      await patch('null', 'application/json-patch+json'),
      await patch('{"op":"replace"}', 'application/json-patch+json'),
      await patch('{"resourceType":"Observation"}', 'application/fhir+json'),
      await send('POST', '/fhir', { resourceType: 'Bundle', type: 'batch', entry: [{}] }),
      await send('POST', '/fhir', { resourceType: 'Bundle', type: 'collection', entry: [] }),
      await send(
        'PUT',
        '/fhir/Observation?code=weight',
        { resourceType: 'Observation' },
        { 'if-match': 'W/"1"' },
      ),
    ];
    expect(refused.map((r) => r.status)).toEqual([400, 400, 400, 400, 400, 400, 400]);
    const typeLevel = await patch('[]', 'application/json-patch+json', '/fhir/Observation');
    expect(typeLevel.status).toBe(405);
    expect(typeLevel.headers.get('allow')).toBe('GET, HEAD, POST');
    const searchByGet = await gw.call('/fhir/Observation/_search', { token });
    expect(searchByGet.status).toBe(405);
    expect(searchByGet.headers.get('allow')).toBe('POST');
    const now = (await (await gw.call(`/fhir/Observation/${ids.obs}`, { token })).json()) as {
      meta: { versionId: string };
    };
    expect(
      (
        await send(
          'PATCH',
          `/fhir/Observation/${ids.obs}`,
          '[{"op":"replace","path":"/status","value":"amended"}]',
          {
            'content-type': 'application/json-patch+json',
          },
        )
      ).status,
    ).toBe(200);
    const patched = (await (await gw.call(`/fhir/Observation/${ids.obs}`, { token })).json()) as {
      status: string;
      meta: { versionId: string };
    };
    expect(patched.status).toBe('amended');
    expect(patched.meta.versionId).not.toBe(now.meta.versionId);
  });
});
