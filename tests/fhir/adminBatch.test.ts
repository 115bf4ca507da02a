import type { Bundle, OperationOutcome } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';

/**
 * An admin's batch answers entry by entry, and each entry's outcome is the gateway's, for its
 * status: the upstream's own (HAPI's `HAPI-0450: Failed to parse ...`, `Successfully created
 * resource "Patient/1001/_history/1" in 3ms`) never leaves, as no upstream error text does.
 */
describe.each(UPSTREAMS)("an admin's batch, %s upstream", (upstream) => {
  let gw: TestGateway;
  let admin: string;

  beforeAll(async () => {
    gw = await startTestGateway({ upstream });
    admin = await gw.adminToken();
  });

  afterAll(() => gw.close());

  /** POST /fhir of a batch Bundle with `entry`, as the admin. */
  const batch = (entry: unknown[]) =>
    gw.call('/fhir', {
      method: 'POST',
      token: admin,
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry }),
    });

  it("answers each entry's status with the gateway's own outcome", async () => {
    const response = await batch([
      {
        resource: { resourceType: 'Organization', name: 'Batch clinic' },
        request: { method: 'POST', url: 'Organization' },
      },
      {
        // the body's id is not the URL's: refused by every FHIR server
        resource: { resourceType: 'Organization', id: 'other', name: 'Broken' },
        request: { method: 'PUT', url: 'Organization/mismatched' },
      },
      { request: { method: 'GET', url: 'Organization/does-not-exist-123' } },
    ]);
    expect(response.status).toBe(200);
    const text = await response.text();
    const bundle = JSON.parse(text) as Bundle;
    expect(bundle.type).toBe('batch-response');
    const statuses = (bundle.entry ?? []).map((e) => Number.parseInt(e.response?.status ?? '', 10));
    expect(statuses[0]).toBe(201);
    expect(statuses[1]).toBeGreaterThanOrEqual(400);
    expect(statuses[2]).toBe(404);
    for (const entry of bundle.entry ?? []) {
      const outcome = entry.response?.outcome as OperationOutcome | undefined;
      if (outcome === undefined) continue;
      expect(outcome.resourceType).toBe('OperationOutcome');
      for (const issue of outcome.issue ?? [])
        expect(issue.diagnostics ?? '').not.toMatch(/HAPI|Successfully|ms\b/);
    }
    expect(text).not.toMatch(/HAPI-\d+|Successfully created|Failed to parse/);
    expect(text).not.toContain(gw.deps.fhir.baseUrl);
    // HAPI named the answer Bundle itself in Location, a record that cannot be read
    expect(response.headers.get('location')).toBeNull();
    expect(response.headers.get('content-location')).toBeNull();
    // HAPI's self link (its bare base) was sealed into a cursor, which failed when followed
    for (const link of bundle.link ?? []) expect(link.url).not.toContain('_cursor');
  });

  it("seals the paging links of a batch's searches into cursors the admin can follow", async () => {
    for (const name of ['Paged one', 'Paged two', 'Paged three'])
      await gw.deps.fhir.create('Organization', { resourceType: 'Organization', name });
    const response = await batch([{ request: { method: 'GET', url: 'Organization?name=Paged&_count=1' } }]);
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).not.toContain('_getpages');
    const search = (JSON.parse(text) as Bundle).entry?.[0]?.resource as Bundle;
    const next = search.link?.find((l) => l.relation === 'next')?.url ?? '';
    expect(next).toMatch(/^http:\/\/gateway[^/]*\.test\/fhir\?_cursor=[^&]+$/);
    const page = await gw.call(next.replace(/^https?:\/\/[^/]+/, ''), { token: admin });
    expect(page.status).toBe(200);
    expect(((await page.json()) as Bundle).entry).toHaveLength(1);
    // bound to the admin who got it
    const gp = await gw.seedUser({ role: 'practitioner', fhirId: 'no-such-practitioner' });
    const other = await gw.login(gp.email, gp.password);
    expect((await gw.call(next.replace(/^https?:\/\/[^/]+/, ''), { token: other })).status).toBe(400);
  });

  it("relays an operation's own OperationOutcome: $validate's verdict on an invalid resource stays an error", async () => {
    const response = await gw.call('/fhir/Observation/$validate', {
      method: 'POST',
      token: admin,
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Observation', code: { text: 'no status' } }),
    });
    // a server may answer the verdict with 200 or with 400/422 (then the gateway's own error)
    const outcome = (await response.json()) as OperationOutcome;
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(outcome.issue?.some((i) => i.severity === 'error' || i.severity === 'fatal')).toBe(true);
  });
});
