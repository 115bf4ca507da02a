import type { Patient } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import type { FhirService } from '../../src/fhir/fhirService.js';
import { createPanelMembership } from '../../src/fhir/panelMembership.js';
import { ManualClock } from '../helpers/clock.js';

/**
 * The panel cache against a move that commits while a lookup is on its way back (review R1: on
 * HAPI the former practitioner read the moved patient for the whole PANEL_CACHE_TTL). The FHIR
 * server is a stand-in whose answers the test releases one by one: the race is one of ordering.
 */

/** A FHIR server whose Patient searches wait until the test answers them, in order. */
function heldServer() {
  const waiting: ((patients: Patient[]) => void)[] = [];
  let searches = 0;
  const fhir = {
    search: async () => {
      searches++;
      const patients = await new Promise<Patient[]>((resolve) => waiting.push(resolve));
      return {
        body: {
          resourceType: 'Bundle',
          type: 'searchset',
          entry: patients.map((resource) => ({ resource })),
        },
      };
    },
  } as unknown as FhirService;
  // a search that never comes fails the test here, instead of hanging it until vitest's timeout
  const answer = async (patients: Patient[]) => {
    for (let waited = 0; waiting.length === 0; waited++) {
      if (waited > 2_000) throw new Error('no search to answer');
      await new Promise((r) => setTimeout(r, 1));
    }
    waiting.shift()?.(patients);
  };
  return { fhir, answer, searches: () => searches };
}

const patient = (id: string, practitioner: string): Patient => ({
  resourceType: 'Patient',
  id,
  generalPractitioner: [{ reference: `Practitioner/${practitioner}` }],
});

function panels(fhir: FhirService, options: { ttlMs?: number; clock?: ManualClock } = {}) {
  const { ttlMs = 30_000, clock = new ManualClock() } = options;
  return createPanelMembership({ fhir, clock, ttlMs, maxEntries: 100, timeoutMs: 5_000 });
}

describe('the panel cache and a move that overtakes a lookup', () => {
  it('drops the answer a lookup brought back from before the move, asks again, and keeps nothing stale', async () => {
    const server = heldServer();
    const membership = panels(server.fhir);
    const asked = membership.assigned('p1', ['x']);
    // the server read x (still p1's) ... then the admin's move commits and the gateway forgets x
    await membership.forget('x');
    await server.answer([patient('x', 'p1')]);
    await server.answer([patient('x', 'p2')]);
    expect([...(await asked)]).toEqual([]);
    expect(server.searches()).toBe(2);
    // the second answer is the one kept
    expect([...(await membership.assigned('p2', ['x']))]).toEqual(['x']);
    expect([...(await membership.assigned('p1', ['x']))]).toEqual([]);
    expect(server.searches()).toBe(2);
  });

  it('keeps an answer when only another patient was forgotten meanwhile', async () => {
    const server = heldServer();
    const membership = panels(server.fhir);
    const asked = membership.assigned('p1', ['x']);
    await membership.forget('y');
    await server.answer([patient('x', 'p1')]);
    expect([...(await asked)]).toEqual(['x']);
    expect(server.searches()).toBe(1);
  });

  it('drops it after forgetAll (a batch) too', async () => {
    const server = heldServer();
    const membership = panels(server.fhir);
    const asked = membership.assigned('p1', ['x']);
    await membership.forgetAll();
    await server.answer([patient('x', 'p1')]);
    await server.answer([patient('x', 'p2')]);
    expect([...(await asked)]).toEqual([]);
  });

  it('answers from the lookup it made with PANEL_CACHE_TTL 0, and asks again next time', async () => {
    const server = heldServer();
    const membership = panels(server.fhir, { ttlMs: 0 });
    const first = membership.assigned('p1', ['x']);
    await server.answer([patient('x', 'p1')]);
    expect([...(await first)]).toEqual(['x']);
    const second = membership.assigned('p1', ['x']);
    await server.answer([patient('x', 'p2')]);
    expect([...(await second)]).toEqual([]);
    expect(server.searches()).toBe(2);
  });
});

describe('PANEL_CACHE_TTL: how long an answer is reused', () => {
  // x was p1's when asked at 0; it moved to p2 since, outside the gateway (nothing was forgotten)
  it.each([
    [29_999, 'reused', ['x'], 1],
    [30_000, 'asked again', [], 2],
  ])('at %i ms the answer is %s', async (elapsed, _what, assigned, searches) => {
    const server = heldServer();
    const clock = new ManualClock();
    const membership = panels(server.fhir, { clock });
    const first = membership.assigned('p1', ['x']);
    await server.answer([patient('x', 'p1')]);
    expect([...(await first)]).toEqual(['x']);
    clock.advance(elapsed);
    const later = membership.assigned('p1', ['x']);
    if (searches > 1) await server.answer([patient('x', 'p2')]);
    expect([...(await later)]).toEqual(assigned);
    expect(server.searches()).toBe(searches);
  });

  it('asks again for an answer that expired while another patient was looked up', async () => {
    const server = heldServer();
    const clock = new ManualClock();
    const membership = panels(server.fhir, { clock });
    const first = membership.assigned('p1', ['y']);
    await server.answer([patient('y', 'p1')]);
    await first;
    clock.advance(29_000);
    // y is fresh when the question starts; x is not known
    const asked = membership.assigned('p1', ['x', 'y']);
    clock.advance(2_000);
    await server.answer([patient('x', 'p1')]);
    // y's answer is now 31 s old: asked again rather than believed
    await server.answer([patient('y', 'p1')]);
    expect([...(await asked)].sort()).toEqual(['x', 'y']);
    expect(server.searches()).toBe(3);
  });
});

// a server whose pages are smaller than the lookup's `_count` (helper review): the patients on
// later pages were read as nobody's and remembered so for the TTL
describe('a panel lookup the server pages', () => {
  const base = 'http://up.example/fhir';
  /** Answers the lookup one patient to a page, each page linking the next as `next`. */
  function pagingServer(patients: Patient[], nextUrl = (n: number) => `${base}/Patient?_page=${n}`) {
    const pages: string[] = [];
    const pageOf = (n: number) => ({
      body: {
        resourceType: 'Bundle',
        type: 'searchset',
        entry: patients.slice(n, n + 1).map((resource) => ({ resource })),
        link: [{ relation: 'next', url: nextUrl(n + 1) }],
      },
    });
    const fhir = {
      baseUrl: base,
      search: async () => pageOf(0),
      page: async (relative: string) => {
        pages.push(relative);
        return pageOf(Number(/_page=(\d+)/.exec(relative)?.[1]));
      },
    } as unknown as FhirService;
    return { fhir, pages };
  }

  it('follows the next links until every patient asked is seen', async () => {
    const server = pagingServer([patient('x', 'p1'), patient('y', 'p1'), patient('z', 'p2')]);
    expect([...(await panels(server.fhir).assigned('p1', ['x', 'y', 'z']))].sort()).toEqual(['x', 'y']);
    expect(server.pages).toEqual(['Patient?_page=1', 'Patient?_page=2']);
  });

  it.each([
    [
      'a next link off the base',
      pagingServer([patient('x', 'p1')], () => 'http://elsewhere.example/Patient'),
    ],
    ['pages without end', pagingServer([patient('x', 'p1')])],
    ['a next link to the bare base', pagingServer([patient('x', 'p1')], () => base)],
  ])('is a 502 for %s', async (_what, server) => {
    const membership = panels(server.fhir);
    await expect(membership.assigned('p1', ['x', 'y'])).rejects.toMatchObject({ code: 'upstream_error' });
  });
});
