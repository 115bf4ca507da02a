import type { Bundle, OperationOutcome } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CursorPayload, sealCursor } from '../../src/fhir/links.js';
import { unseal } from '../../src/secrets.js';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';

/**
 * HAPI keeps a search's results for a while, not across its restart, and answers a paging link
 * to a search it forgot with 410 (HAPI-0417). Following such a `next` link is no missing record
 * (a scoped caller was told 404) and no broken server (an admin was told 502, which invites
 * retries that never succeed): every role is told 410 `page_expired`, run the search again.
 * The cursor here is the gateway's own, as the search gave it, with the stored search's id in it
 * replaced by one the server never had: what a forgotten search looks like to it.
 */

const HAPI_FLAVOURS = UPSTREAMS.filter((u) => u !== 'embedded');

describe.each(HAPI_FLAVOURS)('a page the FHIR server forgot, %s upstream', (upstream) => {
  let gw: TestGateway;
  const tokens = { p: '', gp: '', admin: '' };
  let patientId = '';

  beforeAll(async () => {
    gw = await startTestGateway({ upstream });
    const fhir = gw.deps.fhir;
    const gpId = (
      await fhir.create('Practitioner', { resourceType: 'Practitioner', name: [{ family: 'Pager' }] })
    ).id;
    patientId = (
      await fhir.create('Patient', {
        resourceType: 'Patient',
        name: [{ family: 'Paged' }],
        generalPractitioner: [{ reference: `Practitioner/${gpId}` }],
      })
    ).id;
    for (let i = 0; i < 3; i++)
      await fhir.create('Observation', {
        resourceType: 'Observation',
        status: 'final',
        code: { text: `paged ${i}` },
        subject: { reference: `Patient/${patientId}` },
      });
    const patient = await gw.seedUser({ role: 'patient', fhirId: patientId });
    const gp = await gw.seedUser({ role: 'practitioner', fhirId: gpId });
    tokens.p = await gw.login(patient.email, patient.password);
    tokens.gp = await gw.login(gp.email, gp.password);
    tokens.admin = await gw.adminToken();
  });

  afterAll(() => gw.close());

  /** The cursor with its stored search swapped for one the server never had. */
  const forgottenCursor = (cursor: string): string => {
    const payload = JSON.parse(unseal(gw.deps.secrets.cursorKey, cursor)) as CursorPayload;
    expect(payload.p).toMatch(/_getpages=/);
    const p = payload.p.replace(/_getpages=[^&]+/, '_getpages=forgotten-search');
    return sealCursor(gw.deps.secrets.cursorKey, { ...payload, p });
  };

  /** The gateway path of `url` with its cursor's stored search swapped for one the server never had. */
  const forgotten = (url: string): string => {
    const gatewayUrl = new URL(url);
    gatewayUrl.searchParams.set('_cursor', forgottenCursor(gatewayUrl.searchParams.get('_cursor') ?? ''));
    return `${gatewayUrl.pathname}${gatewayUrl.search}`;
  };

  it("patient: a slim list's next_cursor to a search the server forgot answers 410 page_expired, as documented", async () => {
    const first = await gw.call('/patient/observations?limit=1', { token: tokens.p });
    const { next_cursor: next } = (await first.json()) as { next_cursor: string | null };
    expect(next).not.toBeNull();
    const expired = await gw.call(`/patient/observations?cursor=${forgottenCursor(next as string)}`, {
      token: tokens.p,
    });
    expect(expired.status).toBe(410);
    expect(await expired.json()).toMatchObject({ code: 'page_expired' });
  });

  it("admin: HAPI's own paging link to a search it never had, sent as it is, answers 410 page_expired, not 502", async () => {
    const raw = await gw.call('/fhir?_getpages=never-was&_getpagesoffset=10&_count=10', {
      token: tokens.admin,
    });
    expect(raw.status).toBe(410);
    expect(JSON.stringify(await raw.json())).toMatch(/run the search again/);
  });

  for (const role of ['p', 'gp', 'admin'] as const) {
    it(`${role}: following the next link answers 410 page_expired, and the search itself still works`, async () => {
      const search = `/fhir/Observation?subject=Patient/${patientId}&_count=1`;
      const first = await gw.call(search, { token: tokens[role] });
      expect(first.status).toBe(200);
      const next = ((await first.json()) as Bundle).link?.find((l) => l.relation === 'next')?.url;
      expect(next).toBeDefined();
      const expired = await gw.call(forgotten(next as string), { token: tokens[role] });
      expect(expired.status).toBe(410);
      const outcome = (await expired.json()) as OperationOutcome;
      expect(outcome.issue?.[0]).toMatchObject({ code: 'not-found' });
      expect(JSON.stringify(outcome)).toMatch(/run the search again/);
      expect(JSON.stringify(outcome)).not.toMatch(/HAPI|forgotten-search/);
      expect((await gw.call(search, { token: tokens[role] })).status).toBe(200);
    });
  }
});
