import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HapiUpstream, startHapiUpstream } from '../helpers/hapiUpstream.js';

// The second upstream flavour the suites run against must really have HAPI FHIR's habits,
// or running them "against HAPI" proves nothing: this file pins each habit down.

type Json = Record<string, unknown> & { id?: string };

describe('the HAPI-flavoured test upstream', () => {
  let hapi: HapiUpstream;
  let token: string;

  const call = async (path: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${token}`);
    if (init.body) headers.set('content-type', 'application/fhir+json');
    const response = await fetch(`${hapi.baseUrl}${path}`, { ...init, headers });
    const text = await response.text();
    return {
      status: response.status,
      headers: response.headers,
      json: (text ? JSON.parse(text) : {}) as Json,
    };
  };
  const create = (resource: Json, headers: Record<string, string> = {}) =>
    call(`/${resource.resourceType}`, { method: 'POST', body: JSON.stringify(resource), headers });

  beforeAll(async () => {
    hapi = await startHapiUpstream();
    const response = await fetch(hapi.tokenUrl, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${hapi.clientId}:${hapi.clientSecret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'grant_type=client_credentials',
    });
    token = ((await response.json()) as { access_token: string }).access_token;
  });
  afterAll(async () => {
    await hapi.close();
  });

  it('refuses FHIR calls without a token from its client-credentials endpoint', async () => {
    expect((await fetch(`${hapi.baseUrl}/Patient`)).status).toBe(401);
    const wrong = await fetch(hapi.tokenUrl, { method: 'POST', body: 'grant_type=client_credentials' });
    expect(wrong.status).toBe(401);
  });

  it('names resources and versions with numbers, with Location /_history/N and ETag W/"N"', async () => {
    const created = await create({ resourceType: 'Patient', name: [{ family: 'Numeric' }] });
    expect(created.status).toBe(201);
    expect(created.json.id).toMatch(/^\d+$/);
    expect(created.headers.get('etag')).toBe('W/"1"');
    expect(created.headers.get('location')).toBe(`${hapi.baseUrl}/Patient/${created.json.id}/_history/1`);
    const updated = await call(`/Patient/${created.json.id}`, {
      method: 'PUT',
      body: JSON.stringify({ ...created.json, gender: 'other' }),
    });
    expect(updated.headers.get('etag')).toBe('W/"2"');
  });

  it('pages at the base with _getpages links and absolute fullUrls', async () => {
    for (let i = 0; i < 3; i++) await create({ resourceType: 'Patient', name: [{ family: 'Paged' }] });
    const first = await call('/Patient?family=Paged&_count=2');
    const links = first.json.link as { relation: string; url: string }[];
    const next = links.find((l) => l.relation === 'next')?.url ?? '';
    expect(next).toMatch(new RegExp(`^${hapi.baseUrl}\\?_getpages=[0-9a-f-]+&_getpagesoffset=2&_count=2`));
    const entries = first.json.entry as { fullUrl: string }[];
    expect(entries[0]?.fullUrl).toMatch(new RegExp(`^${hapi.baseUrl}/Patient/\\d+$`));
    const second = await call(next.slice(hapi.baseUrl.length));
    expect((second.json.entry as unknown[]).length).toBe(1);
  });

  it('answers 410 for a deleted resource, 412 for an ambiguous conditional create, 400 for an unknown parameter, with HAPI diagnostics', async () => {
    const doomed = await create({ resourceType: 'Patient', name: [{ family: 'Doomed' }] });
    await call(`/Patient/${doomed.json.id}`, { method: 'DELETE' });
    expect((await call(`/Patient/${doomed.json.id}`)).status).toBe(410);

    const twin = { resourceType: 'Patient', identifier: [{ system: 'urn:twins', value: 'a' }] };
    await create(twin);
    await create(twin);
    const ambiguous = await create(twin, { 'if-none-exist': 'identifier=urn:twins|a' });
    expect(ambiguous.status).toBe(412);

    const unknown = await call('/Patient?shoeSize=42');
    expect(unknown.status).toBe(400);
    expect(JSON.stringify(unknown.json)).toMatch(/"diagnostics":"HAPI-\d+: /);
  });
});
