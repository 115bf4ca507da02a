import type { Bundle, Patient } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';

/**
 * A record's history pages like a search: `_count` is honoured, and every next link is the
 * gateway's own sealed cursor on the same history, never the upstream's paging link (HAPI's
 * `?_getpages=` at its base, which a patient may not call and which leaked the upstream's scheme).
 * A client following next links sees each version once, and the walk ends.
 */

const VERSIONS = 5;

describe.each(UPSTREAMS)('paging a record history, %s upstream', (upstream) => {
  let gw: TestGateway;
  const ids = { gp: '', p: '', other: '' };
  const tokens = { gp: '', p: '', admin: '', otherPatient: '' };

  beforeAll(async () => {
    gw = await startTestGateway({ upstream });
    const fhir = gw.deps.fhir;
    ids.gp = (
      await fhir.create('Practitioner', { resourceType: 'Practitioner', name: [{ family: 'Gp' }] })
    ).id;
    const record: Patient = {
      resourceType: 'Patient',
      name: [{ family: 'Versioned', given: ['V1'] }],
      generalPractitioner: [{ reference: `Practitioner/${ids.gp}` }],
    };
    ids.p = (await fhir.create('Patient', record)).id;
    for (let v = 2; v <= VERSIONS; v++)
      await fhir.update('Patient', ids.p, {
        ...record,
        id: ids.p,
        name: [{ family: 'Versioned', given: [`V${v}`] }],
      });
    ids.other = (await fhir.create('Patient', { resourceType: 'Patient', name: [{ family: 'Other' }] })).id;
    await fhir.update('Patient', ids.other, {
      resourceType: 'Patient',
      id: ids.other,
      name: [{ family: 'Other2' }],
    });
    const gp = await gw.seedUser({ role: 'practitioner', fhirId: ids.gp });
    const patient = await gw.seedUser({ role: 'patient', fhirId: ids.p });
    const other = await gw.seedUser({ role: 'patient', fhirId: ids.other });
    tokens.gp = await gw.login(gp.email, gp.password);
    tokens.p = await gw.login(patient.email, patient.password);
    tokens.otherPatient = await gw.login(other.email, other.password);
    tokens.admin = await gw.adminToken();
  });

  afterAll(() => gw.close());

  /** Follows next links from `first`; the given names of every version seen, in order. */
  const walk = async (first: string, token: string) => {
    const seen: string[] = [];
    const links: string[] = [];
    const totals: (number | undefined)[] = [];
    let url: string | undefined = first;
    for (let pages = 0; url && pages <= VERSIONS + 1; pages++) {
      const response = await gw.call(url.replace(/^https?:\/\/[^/]+/, ''), { token });
      expect(response.status).toBe(200);
      const bundle = (await response.json()) as Bundle<Patient>;
      expect(bundle.type).toBe('history');
      expect(bundle.entry?.length ?? 0).toBeLessThanOrEqual(2);
      // self: the gateway's URL of the page just read (R4 search), never the upstream's
      const self = bundle.link?.find((l) => l.relation === 'self')?.url ?? '';
      expect(self.replace(/^https?:\/\/[^/]+/, '')).toBe(url.replace(/^https?:\/\/[^/]+/, ''));
      for (const entry of bundle.entry ?? []) seen.push(entry.resource?.name?.[0]?.given?.[0] ?? '');
      totals.push(bundle.total);
      url = bundle.link?.find((l) => l.relation === 'next')?.url;
      if (url) links.push(url);
    }
    return { seen, links, totals };
  };

  for (const role of ['p', 'gp', 'admin'] as const) {
    it(`${role}: _count=2 gives pages of 2 with gateway next links, each version once, and the walk ends`, async () => {
      const { seen, links, totals } = await walk(`/fhir/Patient/${ids.p}/_history?_count=2`, tokens[role]);
      expect([...seen].sort()).toEqual(['V1', 'V2', 'V3', 'V4', 'V5']);
      // a scoped role's history has no total: it would count versions hidden from them (review S4)
      if (role !== 'admin') expect(new Set(totals)).toEqual(new Set([undefined]));
      expect(links.length).toBeGreaterThanOrEqual(2);
      for (const link of links) {
        expect(link).toMatch(new RegExp(`^https?://[^/]+/fhir/Patient/${ids.p}/_history\\?_cursor=[^&]+$`));
        expect(link).not.toContain('_getpages');
      }
    });
  }

  // the embedded engine (and the HAPI-flavoured fake built on it) serves instance history only:
  // this is the real HAPI's test alone
  if (upstream === 'hapi-real')
    it("admin: a type's history pages with gateway cursors too, never the upstream's links", async () => {
      // the real HAPI holds every test file's patients: two pages, not the whole walk
      const page = async (path: string) => {
        const response = await gw.call(path.replace(/^https?:\/\/[^/]+/, ''), { token: tokens.admin });
        expect(response.status).toBe(200);
        const bundle = (await response.json()) as Bundle<Patient>;
        expect(bundle.type).toBe('history');
        const versions = (bundle.entry ?? []).map((e) => `${e.resource?.id}/${e.resource?.meta?.versionId}`);
        return { versions, next: bundle.link?.find((l) => l.relation === 'next')?.url ?? '' };
      };
      const first = await page('/fhir/Patient/_history?_count=2');
      expect(first.versions).toHaveLength(2);
      expect(first.next).toMatch(/^https?:\/\/[^/]+\/fhir\/Patient\/_history\?_cursor=[^&]+$/);
      const second = await page(first.next);
      expect(second.versions).toHaveLength(2);
      expect(second.versions.filter((v) => first.versions.includes(v))).toEqual([]);
    });

  it("scoped roles may not read a type's or the server's history, nor page one with a cursor", async () => {
    for (const token of [tokens.p, tokens.gp]) {
      expect((await gw.call('/fhir/Patient/_history', { token })).status).toBe(403);
      expect((await gw.call('/fhir/_history', { token })).status).toBe(403);
      expect((await gw.call('/fhir/Patient/_history?_cursor=x', { token })).status).toBe(403);
    }
  });

  it("a history cursor pages only that record's history, and only for its holder", async () => {
    const first = await gw.call(`/fhir/Patient/${ids.p}/_history?_count=2`, { token: tokens.gp });
    const next = ((await first.json()) as Bundle).link?.find((l) => l.relation === 'next')?.url ?? '';
    const cursor = new URL(next).searchParams.get('_cursor') ?? '';
    expect(cursor).not.toBe('');
    const elsewhere = [
      `/fhir/Patient?_cursor=${cursor}`,
      `/fhir/Practitioner/${ids.gp}/_history?_cursor=${cursor}`,
      `/fhir/Patient/${ids.p}/_history/1?_cursor=${cursor}`,
    ];
    for (const path of elsewhere) expect((await gw.call(path, { token: tokens.gp })).status).toBe(400);
    const cursorAt = (token: string) =>
      gw.call(`/fhir/Patient/${ids.p}/_history?_cursor=${cursor}`, { token });
    // the patient may read this history, but not with a cursor issued to someone else
    const notTheirs = await cursorAt(tokens.p);
    expect(notTheirs.status).toBe(400);
    // the issue names the parameter as it is spelled in the link
    expect(((await notTheirs.json()) as { issue: { expression: string[] }[] }).issue[0]?.expression).toEqual([
      '_cursor',
    ]);
    // another patient holding the link gets nothing of it: the record is not theirs
    expect((await cursorAt(tokens.otherPatient)).status).toBe(404);
  });

  it('a scoped role may ask _count on a history, and nothing the gateway would not check', async () => {
    const since = await gw.call(`/fhir/Patient/${ids.p}/_history?_since=2020-01-01`, { token: tokens.p });
    expect(since.status).toBe(400);
    const listed = await gw.call(`/fhir/Patient/${ids.p}/_history?_count=x`, { token: tokens.p });
    expect(listed.status).toBe(400);
  });
});
