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

  it("answers each entry's status with the gateway's own outcome", async () => {
    const response = await gw.call('/fhir', {
      method: 'POST',
      token: admin,
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({
        resourceType: 'Bundle',
        type: 'batch',
        entry: [
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
        ],
      }),
    });
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
  });
});
