import type { Observation } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';

/**
 * An admin's versioned writes (R4 http.html#concurrency) mean the same on every upstream: the
 * gateway checks If-Match against the version it reads and sends the upstream that version's own
 * tag. Real HAPI answered `If-Match: W/"abc"` and `If-Match: *` with a 500 (a 502 for our client).
 */
describe.each(UPSTREAMS)("an admin's If-Match, %s upstream", (upstream) => {
  let gw: TestGateway;
  let token = '';

  beforeAll(async () => {
    gw = await startTestGateway({ upstream });
    token = await gw.adminToken();
  });

  afterAll(() => gw.close());

  const weight = (value: number): Observation => ({
    resourceType: 'Observation',
    status: 'final',
    code: { text: 'Body weight' },
    valueQuantity: { value, unit: 'kg' },
  });

  const created = async () => {
    const response = await gw.call('/fhir/Observation', { method: 'POST', token, json: weight(70) });
    expect(response.status).toBe(201);
    const body = (await response.json()) as Observation;
    return { id: body.id ?? '', etag: response.headers.get('etag') ?? `W/"${body.meta?.versionId}"` };
  };

  const put = (id: string, value: number, ifMatch: string) =>
    gw.call(`/fhir/Observation/${id}`, {
      method: 'PUT',
      token,
      json: { ...weight(value), id },
      headers: { 'if-match': ifMatch },
    });

  const weightOf = async (id: string) => {
    const response = await gw.call(`/fhir/Observation/${id}`, { token });
    return ((await response.json()) as Observation).valueQuantity?.value;
  };

  it('refuses a tag naming no version (W/"abc", a stale one) with 412 and changes nothing', async () => {
    const { id, etag } = await created();
    for (const ifMatch of ['W/"abc"', '"abc"', 'W/"999"']) {
      const response = await put(id, 71, ifMatch);
      expect(response.status).toBe(412);
      expect(((await response.json()) as { resourceType: string }).resourceType).toBe('OperationOutcome');
    }
    expect(await weightOf(id)).toBe(70);
    expect((await put(id, 72, etag)).status).toBe(200);
    expect((await put(id, 73, etag)).status).toBe(412);
    expect(await weightOf(id)).toBe(72);
  });

  it('applies * and a list that holds the current tag', async () => {
    const { id, etag } = await created();
    expect((await put(id, 74, `W/"999", ${etag}`)).status).toBe(200);
    expect(await weightOf(id)).toBe(74);
    expect((await put(id, 75, '*')).status).toBe(200);
    expect(await weightOf(id)).toBe(75);
  });

  it('answers * on a record that does not exist 412 and creates nothing', async () => {
    const id = `nothing-here-${Date.now()}`;
    expect((await put(id, 76, '*')).status).toBe(412);
    expect((await gw.call(`/fhir/Observation/${id}`, { token })).status).toBe(404);
  });

  it('checks If-Match on a delete too', async () => {
    const { id, etag } = await created();
    const remove = (ifMatch: string) =>
      gw.call(`/fhir/Observation/${id}`, { method: 'DELETE', token, headers: { 'if-match': ifMatch } });
    expect((await remove('W/"abc"')).status).toBe(412);
    expect(await weightOf(id)).toBe(70);
    expect((await remove(etag)).status).toBeLessThan(300);
    expect((await gw.call(`/fhir/Observation/${id}`, { token })).status).toBe(410);
  });

  const entryPut = (id: string, value: number, ifMatch?: string) => ({
    resource: { ...weight(value), id },
    request: { method: 'PUT', url: `Observation/${id}`, ...(ifMatch ? { ifMatch } : {}) },
  });
  const bundleOf = (type: 'batch' | 'transaction', entry: unknown[]) =>
    gw.call('/fhir', { method: 'POST', token, json: { resourceType: 'Bundle', type, entry } });
  const statusesOf = async (response: Response) =>
    (((await response.json()) as { entry?: { response?: { status?: string } }[] }).entry ?? []).map((e) =>
      Number.parseInt(e.response?.status ?? '', 10),
    );

  it("checks each batch entry's ifMatch: a tag naming no version is that entry's 412, the others go ahead", async () => {
    const [a, b, c, d] = [await created(), await created(), await created(), await created()];
    const response = await bundleOf('batch', [
      entryPut(a.id, 81, 'W/"abc"'),
      entryPut(b.id, 82, b.etag),
      entryPut(c.id, 83, '*'),
      { request: { method: 'DELETE', url: `Observation/${d.id}`, ifMatch: 'W/"999"' } },
      entryPut(`nothing-here-${Date.now()}`, 84, '*'),
    ]);
    expect(response.status).toBe(200);
    expect(await statusesOf(response)).toEqual([412, 200, 200, 412, 412]);
    expect([await weightOf(a.id), await weightOf(b.id), await weightOf(c.id), await weightOf(d.id)]).toEqual([
      70, 82, 83, 70,
    ]);
  });

  it('answers a batch whose every entry fails its ifMatch without sending it', async () => {
    const { id } = await created();
    const response = await bundleOf('batch', [entryPut(id, 85, 'W/"999"')]);
    expect(response.status).toBe(200);
    expect(await statusesOf(response)).toEqual([412]);
    expect(await weightOf(id)).toBe(70);
  });

  it('refuses a whole transaction with 412 when one entry fails its ifMatch, and applies none of it', async () => {
    const [a, b] = [await created(), await created()];
    const response = await bundleOf('transaction', [
      entryPut(a.id, 86, a.etag),
      entryPut(b.id, 87, 'W/"999"'),
    ]);
    expect(response.status).toBe(412);
    expect([await weightOf(a.id), await weightOf(b.id)]).toEqual([70, 70]);
    const applied = await bundleOf('transaction', [entryPut(a.id, 88, a.etag), entryPut(b.id, 89, '*')]);
    expect(applied.status).toBe(200);
    expect([await weightOf(a.id), await weightOf(b.id)]).toEqual([88, 89]);
  });

  it('refuses an ifMatch the server cannot apply (not an entity tag, a create, a conditional write) with 400', async () => {
    const { id } = await created();
    for (const entry of [
      entryPut(id, 90, 'abc'),
      { resource: weight(91), request: { method: 'POST', url: 'Observation', ifMatch: '*' } },
      { resource: weight(92), request: { method: 'PUT', url: 'Observation?code=x', ifMatch: '*' } },
    ]) {
      const response = await bundleOf('batch', [entry]);
      expect(response.status).toBe(400);
    }
    expect(await weightOf(id)).toBe(70);
  });
});
