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
  const answer = async (patients: Patient[]) => {
    while (waiting.length === 0) await new Promise((r) => setTimeout(r, 1));
    waiting.shift()?.(patients);
  };
  return { fhir, answer, searches: () => searches };
}

const patient = (id: string, practitioner: string): Patient => ({
  resourceType: 'Patient',
  id,
  generalPractitioner: [{ reference: `Practitioner/${practitioner}` }],
});

function panels(fhir: FhirService, ttlMs = 30_000, clock = new ManualClock()) {
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
    const membership = panels(server.fhir, 0);
    const first = membership.assigned('p1', ['x']);
    await server.answer([patient('x', 'p1')]);
    expect([...(await first)]).toEqual(['x']);
    const second = membership.assigned('p1', ['x']);
    await server.answer([patient('x', 'p2')]);
    expect([...(await second)]).toEqual([]);
    expect(server.searches()).toBe(2);
  });

  it('reuses an answer for PANEL_CACHE_TTL and no longer: a moved patient leaves the old panel after it', async () => {
    const server = heldServer();
    const clock = new ManualClock();
    const membership = panels(server.fhir, 30_000, clock);
    const first = membership.assigned('p1', ['x', 'y']);
    await server.answer([patient('x', 'p1'), patient('y', 'p2')]);
    expect([...(await first)]).toEqual(['x']);
    clock.advance(29_999);
    expect([...(await membership.assigned('p1', ['x', 'y']))]).toEqual(['x']);
    expect(server.searches()).toBe(1);
    // x moved to p2 meanwhile (not through the gateway, so nothing was forgotten): asked again at 30 s
    clock.advance(1);
    const later = membership.assigned('p1', ['x', 'y']);
    await server.answer([patient('x', 'p2'), patient('y', 'p2')]);
    expect([...(await later)]).toEqual([]);
    expect(server.searches()).toBe(2);
  });
});
