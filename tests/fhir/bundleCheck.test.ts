import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  entriesToJudge,
  keptDeletion,
  keptInScope,
  patientsOfKept,
  removedMatch,
} from '../../src/fhir/bundleCheck.js';
import type { Scope } from '../../src/fhir/compartment.js';
import { loadFhirDefinitions } from '../../src/fhir/definitions.js';
import { DEFAULT_DIRECTORY_TYPES } from '../../src/fhir/directoryTypes.js';

/** The response check's pure rules: which entries leave, what `total` still says, whose data left. */

// the compartment's FHIRPath needs the R4 definitions
beforeAll(() => loadFhirDefinitions());

const directory = new Set(DEFAULT_DIRECTORY_TYPES);
const ME: Scope = { kind: 'patient', patientId: 'a', directory };
const GP: Scope = { kind: 'panel', practitionerId: 'p', directory };
const ALL: Scope = { kind: 'all', directory };

const obs = (patient: string, mode?: 'match' | 'include'): BundleEntry => ({
  resource: {
    resourceType: 'Observation',
    status: 'final',
    code: {},
    subject: { reference: `Patient/${patient}` },
  },
  ...(mode ? { search: { mode } } : {}),
});
const patient = (id: string, mode?: 'match' | 'include'): BundleEntry => ({
  resource: { resourceType: 'Patient', id },
  ...(mode ? { search: { mode } } : {}),
});
const outcome: BundleEntry = {
  resource: { resourceType: 'OperationOutcome', issue: [] },
  search: { mode: 'outcome' },
};
const practitioner: BundleEntry = { resource: { resourceType: 'Practitioner', id: 'p' } };

const UPSTREAM_BASE = 'http://up.example/fhir';

const searchset = (entry: BundleEntry[]): Bundle => ({
  resourceType: 'Bundle',
  type: 'searchset',
  total: entry.length,
  entry,
});

/** The check's result as [entries kept, total still there, patients], or 'same' for the very Bundle. */
function check(bundle: Bundle, scope: Scope, assigned: string[] = []) {
  const result = keptInScope(
    bundle,
    entriesToJudge(bundle, undefined),
    scope,
    UPSTREAM_BASE,
    new Set(assigned),
  );
  if (result.bundle === bundle) return ['same', [...result.patients].sort()];
  return [result.bundle.entry?.length ?? 0, 'total' in result.bundle, [...result.patients].sort()];
}

describe('keptInScope', () => {
  it.each([
    [
      'a patient, own entries only: the very Bundle',
      searchset([obs('a'), obs('a')]),
      ME,
      [],
      ['same', ['a']],
    ],
    [
      "a patient, another one's match removed: no total",
      searchset([obs('a'), obs('b')]),
      ME,
      [],
      [1, false, ['a']],
    ],
    [
      "a patient, another one's include removed: total kept",
      searchset([obs('a', 'match'), patient('b', 'include')]),
      ME,
      [],
      [1, true, ['a']],
    ],
    [
      'an OperationOutcome is no match: total kept',
      searchset([obs('a'), outcome, obs('b', 'include')]),
      ME,
      [],
      [1, true, ['a']],
    ],
    ['the directory stays, names no patient', searchset([obs('a'), practitioner]), ME, [], ['same', ['a']]],
    [
      "a panel: members' records kept; others, and a Patient not naming the practitioner, removed",
      searchset([obs('x'), obs('y'), patient('x')]),
      GP,
      ['x'],
      [1, false, ['x']],
    ],
    [
      'a panel with nobody assigned keeps the directory only',
      searchset([obs('x'), practitioner]),
      GP,
      [],
      [1, false, []],
    ],
    [
      'an admin: everything, every patient',
      searchset([obs('x'), obs('y'), patient('z')]),
      ALL,
      [],
      ['same', ['x', 'y', 'z']],
    ],
  ] as const)('%s', (_name, bundle, scope, assigned, expected) => {
    expect(check(bundle as Bundle, scope, [...assigned])).toEqual(expected);
  });
});

describe('entriesToJudge', () => {
  it('leaves out OperationOutcomes, empty entries and types the token may not see', () => {
    const bundle = searchset([obs('a'), outcome, {}, patient('a')]);
    const types = (shown?: (type: string) => boolean) =>
      entriesToJudge(bundle, shown).map((e) => (e.resource as Resource).resourceType);
    expect(types()).toEqual(['Observation', 'Patient']);
    expect(types((type) => type !== 'Patient')).toEqual(['Observation']);
  });
});

describe('patientsOfKept', () => {
  it.each([
    ['a patient: always their own', obs('a').resource!, 'in', ME, ['a']],
    ['a patient reading the directory: nobody', practitioner.resource!, 'in', ME, []],
    ['a practitioner: the members the membership named', obs('x').resource!, { anyOf: ['x'] }, GP, ['x']],
    ['a practitioner reading a Patient: that patient', patient('x').resource!, 'in', GP, ['x']],
    ['an admin: the resource says', obs('z').resource!, 'in', ALL, ['z']],
    [
      "an admin: another server's patient is nobody",
      { resourceType: 'Observation', subject: { reference: 'http://other.example/fhir/Patient/z' } },
      'in',
      ALL,
      [],
    ],
  ] as const)('%s', (_name, resource, membership, scope, expected) => {
    expect(patientsOfKept(resource as Resource, membership, scope, UPSTREAM_BASE)).toEqual(expected);
  });
});

describe('removedMatch', () => {
  const [m, i] = [obs('a', 'match'), obs('b', 'include')];
  it.each([
    ['nothing removed', [m, i], [m, i], false],
    ['an include removed', [m, i], [m], false],
    ['a match removed', [m, i], [i], true],
    ['an entry without a mode counts as a match', [obs('c'), m], [m], true],
    ['an OperationOutcome removed', [outcome, m], [m], false],
  ] as const)('%s: %s', (_name, all, kept, expected) => {
    expect(removedMatch(all, kept)).toBe(expected);
  });
});

describe('keptDeletion', () => {
  const deletion = (url: string, method = 'DELETE'): BundleEntry => ({
    request: { method: method as 'DELETE', url },
  });
  const history = (entry: BundleEntry[]): Bundle => ({
    resourceType: 'Bundle',
    type: 'history',
    total: entry.length,
    entry,
  });
  it.each([
    [ALL, 'Observation/9', deletion('Observation/1'), true],
    [ALL, undefined, deletion('Observation/1'), true],
    [ME, 'Observation/1', deletion('Observation/1'), true],
    [ME, 'Observation/1', deletion('Observation/1/_history/6'), true],
    [GP, 'Observation/1', deletion('Observation/1'), true],
    [ME, 'Observation/1', deletion('Observation/2'), false],
    [ME, 'Observation/1', deletion('Observation/10'), false],
    [ME, 'Observation/1', deletion('http://elsewhere/Observation/1'), false],
    [ME, 'Observation/1', deletion('Observation/1', 'PUT'), false],
    [ME, undefined, deletion('Observation/1'), false],
    [ME, 'Observation/1', obs('a'), false],
    // the server's odd answer: a url that is not a text is no deletion of the record (and no TypeError)
    [ME, 'Observation/1', { request: { method: 'DELETE', url: 7 } } as unknown as BundleEntry, false],
    [ME, 'Observation/1', { request: { method: 'DELETE', url: {} } } as unknown as BundleEntry, false],
  ] as const)('%o, history of %s: %o kept %s', (scope, record, entry, kept) => {
    expect(keptDeletion(entry, history([entry]), scope, record)).toBe(kept);
  });

  it('keeps nothing without a resource outside a history', () => {
    const entry = deletion('Observation/1');
    expect(keptDeletion(entry, searchset([entry]), ALL)).toBe(false);
  });

  it("keeps a record's deletions in its history; a scoped caller's history has no total", () => {
    const bundle = history([obs('a'), deletion('Observation/1'), obs('a')]);
    const checked = keptInScope(
      bundle,
      entriesToJudge(bundle, undefined),
      ME,
      UPSTREAM_BASE,
      new Set(),
      undefined,
      'Observation/1',
    );
    expect(checked.bundle.entry).toEqual(bundle.entry);
    // it counts the versions the caller may not see too, and was kept only on pages that hid none (review S4)
    expect('total' in checked.bundle).toBe(false);
    const forAdmin = keptInScope(bundle, entriesToJudge(bundle, undefined), ALL, UPSTREAM_BASE, new Set());
    expect(forAdmin.bundle).toBe(bundle);
  });
});
