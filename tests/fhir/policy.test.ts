import type { Bundle, Resource } from '@medplum/fhirtypes';
import { beforeAll, describe, expect, it } from 'vitest';
import { AppError } from '../../src/errors.js';
import {
  assertAdminWrite,
  assertBatchBody,
  assertPatchBody,
  forwardedAnswerMismatch,
  versionedEntries,
  withOurOutcomes,
  withRefusedEntries,
  withResolvedEntries,
} from '../../src/fhir/adminWrites.js';
import {
  elementRepeats,
  everyReference,
  isMember,
  isPractitionerWritable,
  type Membership,
  membershipOf,
  patientsReferencedByWrite,
  practitionerWriteReach,
  recordsToConfirm,
  type Scope,
} from '../../src/fhir/compartment.js';
import { loadFhirDefinitions } from '../../src/fhir/definitions.js';
import { DEFAULT_DIRECTORY_TYPES } from '../../src/fhir/directoryTypes.js';
import { parseFhirPath } from '../../src/fhir/fhirPath.js';
import {
  cursorForLink,
  relativeToBase,
  verifyCursor,
  withEntriesKept,
  withLinks,
} from '../../src/fhir/links.js';
import {
  acceptsJson,
  assertEntityTags,
  assertJsonBody,
  assertQuerySize,
  httpDateOrNone,
  jsonOnly,
  nestedAtMost,
  parseCallerBody,
  preferredBody,
  versionTagFor,
} from '../../src/fhir/negotiation.js';
import { scopeOf } from '../../src/fhir/scopedFhir.js';
import {
  assertScopedInteraction,
  compartmentSearchQuery,
  cursorCompanions,
  historyParams,
  isNearValue,
  isScopedSearchParam,
  narrowSearch,
} from '../../src/fhir/searchPolicy.js';
import { readSubset, type Subset, subsetOf } from '../../src/fhir/subsetting.js';
import { notModifiedIfAny, withMatchedEtag } from '../../src/fhir/versionedWrites.js';

// The FHIR policy as pure functions, case by case: no gateway, no server, milliseconds each.
// The started-gateway suites (tests/security/passthrough.test.ts, tests/fhir/panel.test.ts) stay
// as the end-to-end net on both upstream flavours.

beforeAll(() => loadFhirDefinitions());

describe("what a practitioner's write may reference", () => {
  const obs = (extra: Record<string, unknown>) =>
    ({ resourceType: 'Observation', subject: { reference: 'Patient/a' }, ...extra }) as Resource;
  it.each([
    [{}, ['a']],
    [{ performer: [{ reference: 'Patient/b' }, { reference: 'Practitioner/p' }] }, ['a', 'b']],
    [{ hasMember: [{ reference: '#c1' }] }, ['a']],
    [{ contained: [{ resourceType: 'Observation', subject: { reference: 'Patient/c' } }] }, ['a', 'c']],
    [{ extension: [{ url: 'x', valueReference: { reference: 'Patient/d' } }] }, ['a', 'd']],
    [{ focus: [{ reference: 'Condition?subject=Patient/b' }] }, undefined],
    [{ focus: [{ reference: 'http://fhir.example/Condition/1' }] }, undefined],
    [{ focus: [{ reference: 'urn:uuid:0b6d1d8e-2f5a-4a77-9d51-9bb7e3f0c001' }] }, undefined],
    [{ focus: [{ reference: 'Condition/1/_history/2' }] }, undefined],
    [{ focus: [{ reference: 'condition/1' }] }, undefined],
    // a path, not an id: read to check it, it became a 500 (found by review)
    [{ encounter: { reference: 'Encounter/.' } }, undefined],
    [{ encounter: { reference: 'Encounter/..' } }, undefined],
    [{ encounter: { reference: 'Encounter/1.2' } }, ['a']],
    [{ focus: [{ reference: 'Nonsense/1' }] }, undefined],
    [{ focus: [{ reference: ' Patient/a' }] }, undefined],
    [{ focus: [{ display: 'no reference at all' }] }, ['a']],
  ])('%j names the patients %j (undefined: refused)', (extra, expected) => {
    expect(patientsReferencedByWrite(everyReference(obs(extra)))).toEqual(expected);
  });

  it.each([
    ['a flat resource', { resourceType: 'Basic', code: { text: 'x' } }, 3, true],
    ['exactly at the limit', { a: { b: { c: 1 } } }, 3, true],
    ['one level over', { a: { b: { c: { d: 1 } } } }, 3, false],
    ['arrays count as levels', { a: [[1]] }, 2, false],
    ['scalars do not', { a: 'x', b: 1, c: null }, 1, true],
  ] as const)('nestedAtMost: %s', (_what, value, max, expected) => {
    expect(nestedAtMost(value, max)).toBe(expected);
  });

  it.each([
    ['42.256500|-83.694810', true],
    ['-83.694810|42.256500|11.20|km', true],
    ['0|0|0', true],
    ['42.25650012345678|-83.69481098765432|1.5', true],
    ['90|180|5|mi_i', true],
    ['abc', false],
    ['|||', false],
    ['91|0', false],
    ['0|181|1|km', false],
    ['91|181|-1|km', false],
    ['1|2|3|km|extra', false],
    ['1e3|2', false],
    ['', false],
  ])('isNearValue(%j) is %s', (value, expected) => {
    expect(isNearValue(value)).toBe(expected);
  });

  it('nestedAtMost walks a body 100,000 levels deep without overflowing', () => {
    let deep: unknown = {};
    for (let i = 0; i < 100_000; i++) deep = { extension: [deep] };
    expect(nestedAtMost(deep)).toBe(false);
  });

  it('finds every reference in document order, also in a body nested 100,000 levels deep', () => {
    const resource = {
      subject: { reference: 'Patient/a' },
      contained: [{ performer: [{ reference: 'Practitioner/b' }] }],
      extension: [{ valueReference: { reference: '#c' } }],
    };
    expect(everyReference(resource)).toEqual(['Patient/a', 'Practitioner/b', '#c']);
    let deep: unknown = { reference: 'Patient/deep' };
    for (let i = 0; i < 100_000; i++) deep = { extension: [deep] };
    expect(everyReference(deep)).toEqual(['Patient/deep']);
  });

  it.each([
    ['Observation', true],
    ['Encounter', true],
    ['AuditEvent', false],
    ['Provenance', false],
    ['Patient', false],
    ['Practitioner', false],
  ])('%s is writable by a practitioner: %s', (type, writable) => {
    expect(isPractitionerWritable(type)).toBe(writable);
  });
});

describe('entries removed from the upstream text, the rest as it was written', () => {
  const text =
    '{"resourceType":"Bundle","type":"searchset","total":2,"link":[{"relation":"next","url":"x"}],"entry":[' +
    '{"resource":{"resourceType":"Observation","id":"1","valueQuantity":{"value":1.50},"note":[{"text":"a \\"]} ,"}]}},' +
    ' {"resource":{"resourceType":"Patient","id":"b","entry":[1,2]}} ,\n' +
    '{"resource":{"resourceType":"List","id":"l","entry":[{"item":{"reference":"Patient/b"}}]},"search":{"mode":"include"}}]}';

  it.each([
    [[true, true, true], false, text],
    [[true, false, true], false, text.replace(/ \{"resource":\{"resourceType":"Patient"[^\n]*\n/, '')],
    [[true, false, false], true, null],
    [[false, false, false], true, null],
  ])('keeping %j (total dropped: %s)', (kept, dropTotal, expected) => {
    const result = withEntriesKept(text, kept, dropTotal) as string;
    const parsed = JSON.parse(result) as { entry?: { resource: { id: string } }[]; total?: number };
    const all = (JSON.parse(text) as { entry: { resource: { id: string } }[] }).entry;
    expect(parsed.entry?.map((e) => e.resource.id)).toEqual(
      kept.some(Boolean) ? all.filter((_, i) => kept[i]).map((e) => e.resource.id) : undefined,
    );
    expect('total' in parsed).toBe(!dropTotal);
    // the kept entries byte for byte: 1.50 stays 1.50
    if (kept[0]) expect(result).toContain('"valueQuantity":{"value":1.50}');
    if (expected !== null) expect(JSON.parse(result)).toEqual(JSON.parse(expected));
  });

  it('gives up (undefined) when the entries do not match the flags or the text is not a Bundle object', () => {
    expect(withEntriesKept(text, [true, false], false)).toBeUndefined();
    expect(withEntriesKept('{"resourceType":"Bundle"}', [], false)).toBeUndefined();
    expect(withEntriesKept('{"entry":{"not":"an array"},"a":1}', [true], false)).toBeUndefined();
    // two "entry" members: JSON.parse (and the check) read the last, a splice would edit the first
    expect(withEntriesKept('{"entry":[{"a":1}],"total":1,"entry":[{"b":2}]}', [true], false)).toBeUndefined();
    // the same with the second key spelled with an escape, which JSON.parse reads as "entry"
    expect(withEntriesKept('{"entry":[{"a":1}],"\\u0065ntry":[{"b":2}]}', [true], false)).toBeUndefined();
    // a second "total" would still say how many matched before the removals
    expect(
      withEntriesKept('{"total":2,"entry":[{"a":1},{"b":2}],"total":2}', [true, false], true),
    ).toBeUndefined();
  });
});

const directory = new Set(DEFAULT_DIRECTORY_TYPES);

/** A FHIRPath Patch body (R4 fhirpatch.html) of one operation. */
const fhirPathPatch = (type: string, path: string, name?: string, as = 'valueString') =>
  JSON.stringify({
    resourceType: 'Parameters',
    parameter: [
      {
        name: 'operation',
        part: [
          { name: 'type', valueCode: type },
          { name: 'path', [as]: path },
          ...(name ? [{ name: 'name', [as]: name }] : []),
        ],
      },
    ],
  });
const ALL: Scope = { kind: 'all', directory };
const ME: Scope = { kind: 'patient', patientId: 'a', directory };
const GP: Scope = { kind: 'panel', practitionerId: 'p', directory };
const NONE: Scope = { kind: 'none', directory };

/** The narrowed query as a string, 'empty', or the error status. */
function narrowed(type: string, query: string, scope: Scope): string | number {
  try {
    const result = narrowSearch(type, new URLSearchParams(query), scope);
    return result.kind === 'empty' ? 'empty' : decodeURIComponent(result.params.toString());
  } catch (error) {
    if (error instanceof AppError) return error.status;
    throw error;
  }
}

describe('search narrowing', () => {
  it.each([
    // admins: unchanged
    [
      'Observation',
      'subject=Patient/b&_has:Observation:subject:code=1',
      ALL,
      'subject=Patient/b&_has:Observation:subject:code=1',
    ],
    // a patient: their own id is added, or checked
    ['Observation', 'code=8867-4', ME, 'code=8867-4&subject=Patient/a'],
    ['Observation', 'subject=Patient/a', ME, 'subject=Patient/a'],
    ['Observation', 'subject=a', ME, 'subject=Patient/a'],
    ['Observation', 'patient=Patient/a', ME, 'subject=Patient/a'],
    ['Observation', 'subject=Patient/b', ME, 'empty'],
    ['Observation', 'subject=Patient/a,Patient/b', ME, 'empty'],
    ['Observation', 'subject=Patient/a&subject=Patient/b', ME, 'empty'],
    ['Observation', 'subject=https://x.example/fhir/Patient/b', ME, 'empty'],
    ['Observation', 'subject=Group/1', ME, 'empty'],
    // a type modifier asks for subjects of that type: `subject:Device=a` is not the patient a
    ['Observation', 'subject:Device=a', ME, 'empty'],
    ['Observation', 'subject:Group=a', GP, 'empty'],
    ['Observation', 'subject:Patient=a', ME, 'subject=Patient/a'],
    ['Patient', '', ME, '_id=a'],
    ['Patient', '_id=b', ME, 'empty'],
    // numbers every server reads at once (HAPI spent ~50 s on 9e9999999), for admins too
    ['Observation', 'value-quantity=9e9999999', ALL, 400],
    ['Observation', 'value-quantity=9e9999999|http://unitsofmeasure.org|mg', ME, 400],
    ['Observation', `value-quantity=${'9'.repeat(33)}`, ME, 400],
    ['Observation', 'value-quantity=abc', ME, 400],
    ['Observation', 'value-quantity=gt5,lt9e99999', ME, 400],
    ['Observation', 'code-value-quantity=http://loinc.org|8480-6$gt9e99999', ME, 400],
    ['RiskAssessment', 'probability=9e9999', ALL, 400],
    [
      'Observation',
      'value-quantity=gt5.4|http://unitsofmeasure.org|mg,1e-3',
      ME,
      'value-quantity=gt5.4|http://unitsofmeasure.org|mg,1e-3&subject=Patient/a',
    ],
    [
      'Observation',
      'code-value-quantity=http://loinc.org|8480-6$lt60',
      ME,
      'code-value-quantity=http://loinc.org|8480-6$lt60&subject=Patient/a',
    ],
    ['Observation', 'value-quantity:missing=true', ME, 'value-quantity:missing=true&subject=Patient/a'],
    ['RiskAssessment', 'probability=ge0.5', ALL, 'probability=ge0.5'],
    // an AuditEvent is about the patient it names as an entity, not one who acted in it (agent)
    ['AuditEvent', '', ME, 'entity=Patient/a'],
    ['AuditEvent', 'patient=Patient/a', ME, 'entity=Patient/a'],
    ['AuditEvent', 'patient=Patient/b', ME, 'empty'],
    ['AuditEvent', '', GP, 'entity:Patient.general-practitioner=Practitioner/p'],
    ['Practitioner', 'name=x', ME, 'name=x'],
    // a practitioner's panel: narrowed on the server, never listed
    ['Observation', '_count=5', GP, '_count=5&subject:Patient.general-practitioner=Practitioner/p'],
    [
      'Observation',
      'subject=Patient/b',
      GP,
      'subject=Patient/b&subject:Patient.general-practitioner=Practitioner/p',
    ],
    [
      'Observation',
      'subject=b,c',
      GP,
      'subject=Patient/b,Patient/c&subject:Patient.general-practitioner=Practitioner/p',
    ],
    ['Condition', '', GP, 'patient:Patient.general-practitioner=Practitioner/p'],
    ['AllergyIntolerance', '', GP, 'patient:Patient.general-practitioner=Practitioner/p'],
    ['Patient', '', GP, 'general-practitioner=Practitioner/p'],
    ['Patient', '_id=b', GP, '_id=b&general-practitioner=Practitioner/p'],
    // _elements keeps what the response check reads
    ['Observation', '_elements=code', ME, '_elements=code,subject&subject=Patient/a'],
    [
      'Observation',
      '_elements=code,subject',
      GP,
      '_elements=code,subject&subject:Patient.general-practitioner=Practitioner/p',
    ],
    [
      'Patient',
      '_elements=name',
      GP,
      '_elements=name,generalPractitioner&general-practitioner=Practitioner/p',
    ],
    ['Patient', '_elements=name', ME, '_elements=name&_id=a'],
    ['Observation', '_elements=code', ALL, '_elements=code'],
    // refused for every scoped role
    ['Patient', '_id=a&_has:Observation:performer:code=X', ME, 400],
    ['Patient', '_has:Observation:subject:code=X', GP, 400],
    ['Observation', 'subject:Patient.general-practitioner=Practitioner/q', GP, 400],
    ['Observation', 'subject.name=x', ME, 400],
    ['Observation', '_filter=x', GP, 400],
    ['Observation', '_include=*', ME, 400],
    ['Observation', 'subject:identifier=x|y', ME, 400],
    ['Observation', 'shoeSize=1', ME, 400],
    ['Observation', 'performer=a', ME, 400],
    ['Appointment', '', ME, 403],
    // modifiers that would turn the narrowing around, on parameters that name patients
    ['Observation', 'subject:not=Patient/b', GP, 400],
    ['Observation', 'subject:missing=false', GP, 400],
    ['Observation', 'patient:not=Patient/a', ME, 400],
    ['Patient', '_id:not=b', GP, 400],
    ['Observation', 'subject:Patient=a', ME, 'subject=Patient/a'],
    ['Observation', 'code:not=8867-4', ME, 'code:not=8867-4&subject=Patient/a'],
    // a summary could hide what the check reads
    ['Patient', '_summary=true', GP, 400],
    ['Observation', '_summary=text', ME, 400],
    ['Observation', '_summary=count', ME, '_summary=count&subject=Patient/a'],
    // an account without a FHIR record: directory types only
    ['Observation', '', NONE, 'empty'],
    ['Organization', 'name=x', NONE, 'name=x'],
  ] as const)('%s?%s for %o -> %s', (type, query, scope, expected) => {
    expect(narrowed(type, query, scope)).toBe(expected);
  });
});

/** Which patients a search named: the ones outside the scope ('empty'), or all it named (a search). */
function namedBy(type: string, query: string, scope: Scope): string {
  const result = narrowSearch(type, new URLSearchParams(query), scope);
  return result.kind === 'empty' ? `empty, outside: ${result.outside}` : `named: ${result.named}`;
}

describe('the patients a search names (for the audit and the panel check)', () => {
  it.each([
    ['Observation', 'subject=Patient/b', ME, 'empty, outside: b'],
    ['Observation', 'patient=a,b,c', ME, 'empty, outside: b,c'],
    ['Observation', 'performer=Patient/b', ME, 'empty, outside: b'],
    ['Observation', 'subject:Device=x', ME, 'empty, outside: '],
    ['Observation', 'subject=Group/g', ME, 'empty, outside: '],
    ['Observation', 'subject=Patient/a', ME, 'named: a'],
    ['Observation', 'subject=Patient/b,Patient/c&code=1', GP, 'named: b,c'],
    ['Patient', '_id=b', GP, 'named: b'],
    ['Observation', 'code=1', GP, 'named: '],
    ['Observation', 'performer=Patient/b', GP, 'named: '],
    ['Observation', 'subject=Patient/b', ALL, 'named: '],
    ['Observation', 'subject=Patient/b', NONE, 'empty, outside: b'],
  ])('%s?%s for %o: %s', (type, query, scope, expected) => {
    expect(namedBy(type, query, scope)).toBe(expected);
  });
});

/** The FHIR server's base the response check is told: absolute references on it are its own. */
const UPSTREAM_BASE = 'http://up.example/fhir';

const obs = (subject: string, performer?: string): Resource =>
  ({
    resourceType: 'Observation',
    status: 'final',
    code: {},
    subject: { reference: subject },
    ...(performer ? { performer: [{ reference: performer }] } : {}),
  }) as Resource;
const account = (...subjects: string[]): Resource =>
  ({
    resourceType: 'Account',
    id: 'acc',
    status: 'active',
    subject: subjects.map((reference) => ({ reference })),
  }) as Resource;
const patient = (id: string, ...gps: string[]): Resource =>
  ({ resourceType: 'Patient', id, generalPractitioner: gps.map((reference) => ({ reference })) }) as Resource;

describe('the response check', () => {
  it.each([
    [obs('Patient/a'), ME, 'in'],
    [obs('Patient/b'), ME, 'out'],
    [obs('Patient/b', 'Patient/a'), ME, 'out'], // performer does not widen a patient's view
    [obs('http://up.example/fhir/Patient/a/_history/2'), ME, 'in'],
    // another server's Patient/a is not ours (review S4): only the upstream's own base is local
    [obs('http://other.example/fhir/Patient/a'), ME, 'out'],
    [obs('http://up.example/fhir/other/Patient/a'), ME, 'out'],
    [obs('https://up.example/fhir/Patient/a'), ME, 'out'],
    [obs('http://up.example/Patient/a'), ME, 'out'],
    [obs('http://other.example/fhir/Patient/b'), GP, 'out'],
    // the base as URL parsing reads it, as FHIR_BASE_URL is read (diff review)
    [obs('http://UP.example:80/fhir/Patient/a'), ME, 'in'],
    [obs('http://up.example/fhir/Patient/..'), GP, 'out'],
    [obs('http://up.example/fhir/Patient/b'), GP, { anyOf: ['b'] }],
    [obs('Patient/b/_history/Patient/a'), ME, 'out'], // anchored: names nobody
    [patient('a'), ME, 'in'],
    [patient('b'), ME, 'out'],
    [{ resourceType: 'Practitioner', id: 'x' } as Resource, ME, 'in'],
    [{ resourceType: 'Appointment', id: 'x' } as Resource, ME, 'out'],
    [patient('b', 'Practitioner/p'), GP, 'in'],
    [patient('b', 'Practitioner/q'), GP, 'out'],
    [patient('b', 'Practitioner/p/_history/3'), GP, 'in'],
    [patient('b', 'http://up.example/fhir/Practitioner/p'), GP, 'in'],
    [patient('b', 'http://other.example/fhir/Practitioner/p'), GP, 'out'],
    [patient('b', 'PractitionerRole/p'), GP, 'out'],
    [obs('Patient/b'), GP, { anyOf: ['b'] }],
    [obs('Group/1'), GP, 'out'],
    [obs('Patient/a'), NONE, 'out'],
    [obs('Patient/z'), ALL, 'in'],
    [{ ...obs('Patient/b'), subject: null }, ME, 'out'],
    [{ ...obs('Patient/b'), subject: { reference: 42 } }, ME, 'out'],
    // R4 lets Account.subject repeat: an account of two patients is in both compartments
    [account('Patient/b', 'Patient/a'), ME, 'in'],
    [account('Patient/b', 'Patient/c'), ME, 'out'],
    [account('Patient/b', 'Patient/a'), GP, { anyOf: ['b', 'a'] }],
    [
      { resourceType: 'Person', id: 'x', link: [{ target: { reference: 'Patient/a' } }] } as Resource,
      ME,
      'in',
    ],
  ] as [Resource, Scope, Membership][])('%o for %o is %o', (resource, scope, expected) => {
    expect(membershipOf(resource, scope, UPSTREAM_BASE)).toEqual(expected);
  });

  // a list where R4 allows one value (Observation.subject 0..1): read as a list, [B, A] was A's (helper review)
  it.each([
    [{ ...obs('Patient/b'), subject: [{ reference: 'Patient/b' }, { reference: 'Patient/a' }] }, ME],
    [{ ...obs('Patient/b'), subject: [{ reference: 'Patient/b' }, { reference: 'Patient/a' }] }, GP],
    [{ ...obs('Patient/b'), subject: [null, { reference: 'Patient/a' }] }, ME],
    [{ ...obs('Patient/b'), subject: [[{ reference: 'Patient/a' }]] }, ME],
    [{ ...obs('Patient/b'), subject: [] }, ME],
    [{ resourceType: 'Person', id: 'x', link: [{ target: [{ reference: 'Patient/a' }] }] }, ME],
    [{ resourceType: 'AuditEvent', id: 'x', entity: [{ what: [{ reference: 'Patient/a' }] }] }, GP],
  ] as [Resource, Scope][])('%o for %o is an upstream error (502)', (resource, scope) => {
    expect(() => membershipOf(resource, scope, UPSTREAM_BASE)).toThrow(
      expect.objectContaining({ code: 'upstream_error' }),
    );
  });

  it('an admin reads such a record, its trail naming every patient it lists', () => {
    const twoSubjects = {
      ...obs('Patient/b'),
      subject: [{ reference: 'Patient/b' }, { reference: 'Patient/a' }],
    } as Resource;
    expect(membershipOf(twoSubjects, ALL, UPSTREAM_BASE)).toBe('in');
  });

  it.each([
    ['Observation', ['subject'], [false]],
    ['Account', ['subject'], [true]],
    ['Person', ['link', 'target'], [true, false]],
    ['AuditEvent', ['entity', 'what'], [true, false]],
    ['Provenance', ['target'], [true]],
    ['Observation', ['nonsense', 'reference'], [undefined, undefined]],
  ] as [string, string[], (boolean | undefined)[]][])('%s.%s repeats in R4: %o', (type, path, expected) => {
    expect(elementRepeats(type, path)).toEqual(expected);
  });

  it.each([
    ['in', [], true],
    ['out', ['b'], false],
    [{ anyOf: ['b', 'c'] }, ['c'], true],
    [{ anyOf: ['b'] }, ['c'], false],
  ] as [Membership, string[], boolean][])(
    '%o with panel members %o -> %s',
    (membership, members, expected) => {
      expect(isMember(membership, new Set(members))).toBe(expected);
    },
  );
});

describe('upstream links', () => {
  const base = 'https://hapi.example/fhir';
  it.each([
    [`${base}/Observation?subject=Patient/1&_offset=20`, 'Observation?subject=Patient/1&_offset=20'],
    [`${base}?_getpages=abc&_getpagesoffset=20&_count=20`, '?_getpages=abc&_getpagesoffset=20&_count=20'],
    [`${base}/?_getpages=abc`, '?_getpages=abc'],
    ['Observation?_offset=20', 'Observation?_offset=20'],
    ['?_getpages=abc', '?_getpages=abc'],
    ['/fhir/Observation?ct=xyz', 'Observation?ct=xyz'],
    [base, ''],
    ['https://evil.example/fhir/Observation', undefined],
    ['https://hapi.example/fhirx/Observation', undefined],
    ['https://hapi.example/other/Observation', undefined],
    ['/other/Observation', undefined],
  ])('%s -> %s', (link, relative) => {
    expect(relativeToBase(link, base)).toBe(relative);
  });
});

describe('paging cursors', () => {
  const key = Buffer.alloc(32, 7);
  const now = new Date('2026-12-01T10:00:00Z');
  const issued = { userId: 'u1', route: 'fhir', type: 'Observation', now };
  const cursor = cursorForLink(key, issued, 'https://up/fhir?_getpages=x', 'https://up/fhir') ?? '';

  it.each([
    ['the same caller, route and type', issued, '?_getpages=x'],
    ['another user', { ...issued, userId: 'u2' }, undefined],
    ['another route', { ...issued, route: 'patient.observations' }, undefined],
    ['another type', { ...issued, type: 'Patient' }, undefined],
    ['the base', { ...issued, type: '' }, undefined],
    ['15 minutes later', { ...issued, now: new Date(now.getTime() + 15 * 60_000 + 1000) }, undefined],
  ])('used by %s -> %s', (_label, binding, expected) => {
    expect(verifyCursor(key, cursor, binding)).toBe(expected);
  });

  // a long next link is compressed before it is sealed: bound and checked the same
  const longQuery = `?code=${Array.from({ length: 90 }, (_, i) => `http%3A%2F%2Floinc.org%7C${1000 + i}-${i % 10}`).join('%2C')}`;
  const longCursor =
    cursorForLink(key, issued, `https://up/fhir/Observation${longQuery}`, 'https://up/fhir') ?? '';
  it.each([
    ['the same caller, route and type', issued, `Observation${longQuery}`],
    ['another user', { ...issued, userId: 'u2' }, undefined],
  ])('a long one used by %s -> its page', (_label, binding, expected) => {
    expect(longQuery.length).toBeGreaterThan(3000);
    expect(longCursor.length).toBeLessThan(longQuery.length / 2);
    expect(verifyCursor(key, longCursor, binding)).toBe(expected);
  });

  it.each(['https://up/fhir', 'https://up/fhir/', 'https://elsewhere/fhir?_getpages=x'])(
    'seals no page for %s (the bare base is none, HAPI\u2019s self link of a batch answer)',
    (url) => {
      expect(cursorForLink(key, issued, url, 'https://up/fhir')).toBeUndefined();
    },
  );

  it('reveals nothing of the upstream, the query or the caller to whoever holds it', () => {
    // long, distinct values: a short one (`u1`) turns up in random base64 by chance (1 run in ~20)
    const binding = { userId: 'caller-7f3a9c2e', route: 'patient.observations', type: 'Observation', now };
    const link = 'https://up/fhir/Observation?subject=Patient%2Fpatient-42x&_getpages=abc&_offset=20';
    for (let i = 0; i < 200; i++) {
      const sealed = cursorForLink(key, binding, link, 'https://up/fhir') ?? '';
      const readable = [
        sealed,
        ...sealed.split('.').map((part) => Buffer.from(part, 'base64url').toString('latin1')),
      ];
      for (const text of readable)
        for (const secret of [
          'Observation',
          'patient-42x',
          '_getpages',
          'caller-7f3a9c2e',
          'patient.observations',
        ])
          expect(text).not.toContain(secret);
      expect(verifyCursor(key, sealed, binding)).toBe(
        'Observation?subject=Patient%2Fpatient-42x&_getpages=abc&_offset=20',
      );
    }
  });

  it('is refused in any spelling but its own (the bits a last base64url character leaves unused)', () => {
    const parts = cursor.split('.');
    // the 16-byte tag is 22 characters: the last one carries 4 unused bits
    const tag = parts[2] ?? '';
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const respelled = tag.slice(0, -1) + alphabet[alphabet.indexOf(tag.at(-1) ?? 'A') ^ 1];
    expect(Buffer.from(respelled, 'base64url')).toEqual(Buffer.from(tag, 'base64url'));
    expect(verifyCursor(key, [parts[0], parts[1], respelled, parts[3]].join('.'), issued)).toBeUndefined();
  });

  it('is refused when any part is tampered with, or sealed with another key', () => {
    const parts = cursor.split('.');
    // one character changed in the middle of each part (iv, tag, ciphertext): a last character may
    // carry only base64 padding bits, which decode to the same bytes
    for (let i = 1; i < parts.length; i++) {
      const part = parts[i] ?? '';
      const middle = Math.floor(part.length / 2);
      const flipped = part.slice(0, middle) + (part[middle] === 'A' ? 'B' : 'A') + part.slice(middle + 1);
      const tampered = [...parts.slice(0, i), flipped, ...parts.slice(i + 1)].join('.');
      expect(verifyCursor(key, tampered, issued)).toBeUndefined();
    }
    expect(verifyCursor(key, `${cursor}.x`, issued)).toBeUndefined();
    expect(verifyCursor(Buffer.alloc(32, 8), cursor, issued)).toBeUndefined();
  });

  it.each([
    ['_cursor=c', true],
    ['_cursor=c&_count=50', true],
    ['_cursor=c&_format=json&_pretty=true', true],
    ['_cursor=c&_format=application/fhir%2Bjson', true],
    ['_cursor=c&_format=xml', false],
    ['_cursor=c&code=x', false],
    ['_cursor=c&_cursor=d', false],
  ])('?%s with a cursor is accepted: %s', (query, fine) => {
    const check = () => cursorCompanions(new URLSearchParams(query));
    if (fine) expect(check).not.toThrow();
    else expect(check).toThrow(AppError);
  });
});

describe('history parameters', () => {
  it.each([
    ['', ME, ''],
    ['_count=2', ME, '_count=2'],
    ['_count=0', GP, '_count=0'],
    ['_count=2&_format=json&_pretty=true', GP, '_count=2'],
    ['_count=x', ME, 400],
    ['_count=-1', ME, 400],
    ['_count=2&_count=3', ME, 400],
    ['_since=2020-01-01', ME, 400],
    ['_at=2020', GP, 400],
    ['_format=xml', ME, 400],
    ['_since=2020-01-01&_count=2', ALL, '_since=2020-01-01&_count=2'],
  ])('?%s (%o) is asked upstream as %s', (query, scope, expected) => {
    try {
      expect(historyParams(new URLSearchParams(query), scope).toString()).toBe(expected);
    } catch (error) {
      expect((error as AppError).status).toBe(expected);
    }
  });
});

describe('format negotiation', () => {
  it.each([
    [undefined, true],
    ['', true],
    ['*/*', true],
    ['application/*', true],
    ['application/fhir+json', true],
    ['Application/FHIR+JSON; fhirVersion=4.0', true],
    ['application/json+fhir', true],
    ['application/fhir+xml;q=1, application/json;q=0.1', true],
    ['application/fhir+xml', false],
    ['text/html, application/xhtml+xml', false],
    ['application/fhir+json;q=0', false],
    ['application/fhir+json;q=0.000, text/plain', false],
    ['application/fhir+json;q=0.001', true],
  ])('Accept %s admits JSON: %s', (accept, admits) => {
    expect(acceptsJson(accept)).toBe(admits);
  });

  it.each([
    ['code=x', undefined, 'code=x'],
    ['code=x&_format=json&_pretty=true', 'application/xml', 'code=x'],
    ['_format=application/fhir%2Bjson', undefined, ''],
    ['_format=application/fhir+json', undefined, ''],
    ['_format=xml', undefined, 406],
    ['_format=json&_format=xml', undefined, 406],
    ['code=x', 'application/fhir+xml', 406],
  ])('?%s with Accept %s is forwarded as %s', (query, accept, expected) => {
    try {
      expect(jsonOnly(new URLSearchParams(query), accept).toString()).toBe(expected);
    } catch (error) {
      expect((error as AppError).status).toBe(expected);
    }
  });

  it.each([
    ['application/fhir+json', true],
    ['application/json', true],
    ['Application/FHIR+JSON; charset=UTF-8', true],
    ['application/fhir+json;charset="utf-8"', true],
    ['application/json; charset=utf8', true],
    ['application/fhir+json; fhirVersion=4.0', true],
    ['application/fhir+json; charset=utf-16', false],
    ['application/json;charset=ISO-8859-1', false],
    ['application/json-patch+json', false],
    ['application/jsonx', false],
    ['application/fhir+xml', false],
    ['text/plain', false],
    [undefined, false],
  ])('a write declared %s is read as JSON: %s (else 415)', (contentType, accepted) => {
    if (accepted) expect(() => assertJsonBody(contentType)).not.toThrow();
    else expect(() => assertJsonBody(contentType)).toThrow(expect.objectContaining({ status: 415 }));
  });

  it('keeps the very query when there is nothing to drop (no copy per request)', () => {
    const query = new URLSearchParams('code=x');
    expect(jsonOnly(query, 'application/fhir+json')).toBe(query);
  });

  it.each([
    [undefined, undefined],
    ['Wed, 21 Oct 2015 07:28:00 GMT', 'Wed, 21 Oct 2015 07:28:00 GMT'],
    ['2015-10-21T07:28:00Z', 'Wed, 21 Oct 2015 07:28:00 GMT'],
    ['yesterday-ish', undefined],
    ['', undefined],
  ])('If-Modified-Since %s is sent on as %s', (value, sent) => {
    expect(httpDateOrNone(value)).toBe(sent);
  });

  it.each([
    ['W/"3"', true],
    ['"abc-1"', true],
    ['*', true],
    ['W/"1", W/"2"', true],
    ['xyz', false],
    ['W/3', false],
    ['"a b"', false],
    ['', false],
  ])('If-Match %s is an entity tag: %s', (value, fine) => {
    const check = () => assertEntityTags({ 'if-match': value, 'if-none-match': value });
    if (fine) expect(check).not.toThrow();
    else expect(check).toThrow(AppError);
  });

  const at = (versionId?: string): Resource =>
    ({ resourceType: 'Observation', ...(versionId ? { meta: { versionId } } : {}) }) as Resource;
  it.each([
    ['W/"3"', at('3'), 'W/"3"'],
    ['"3"', at('3'), 'W/"3"'],
    ['*', at('3'), 'W/"3"'],
    ['W/"1", W/"3"', at('3'), 'W/"3"'],
    ['*', at(), undefined],
    ['W/"2"', at('3'), 412],
    ['W/"abc"', at('3'), 412],
    ['*', undefined, 412],
    ['W/"3"', undefined, 412],
    ['W/"undefined"', at(), 412],
  ] as const)('If-Match %s against %o is sent upstream as %s', (ifMatch, current, sent) => {
    const resolve = () => versionTagFor(ifMatch, current);
    if (sent === 412) expect(resolve).toThrow(expect.objectContaining({ code: 'precondition_failed' }));
    else expect(resolve()).toBe(sent);
  });

  it.each([
    ['code', true],
    ['_id', true],
    ['_lastUpdated', true],
    ['_has', false],
    ['_has:Observation:subject:code', false],
    ['_list', false],
    ['_source', false],
    ['_filter', false],
    ['_format', false],
  ])('the search parameter %s is listed for scoped roles: %s', (name, listed) => {
    expect(isScopedSearchParam(name)).toBe(listed);
  });
});

describe('query caps', () => {
  it.each([
    ['code=x', undefined],
    [`code=${'x'.repeat(4091)}`, undefined],
    [`code=${'x'.repeat(4092)}`, 414],
    [`code=${'|'.repeat(1300)}`, undefined],
    [`code=${'|'.repeat(1400)}`, 414],
    [`code=${'é'.repeat(680)}`, undefined],
    [`code=${'é'.repeat(700)}`, 414],
    [Array.from({ length: 64 }, () => 'a=1').join('&'), undefined],
    [Array.from({ length: 65 }, () => 'a=1').join('&'), 400],
  ])('a query of %#', (query, status) => {
    try {
      assertQuerySize(query, new URLSearchParams(query));
      expect(status).toBeUndefined();
    } catch (error) {
      expect((error as AppError).status).toBe(status);
    }
  });
});

describe('the patients an AuditEvent belongs to', () => {
  it.each([
    ['the one it names as an entity', { entity: [{ what: { reference: 'Patient/a' } }] }, ['a']],
    [
      'the entity, not the agent',
      { agent: [{ who: { reference: 'Patient/a' } }], entity: [{ what: { reference: 'Patient/b' } }] },
      ['b'],
    ],
    ['none when a patient only acted in it', { agent: [{ who: { reference: 'Patient/a' } }] }, []],
  ])('%s', async (_what, fields, patients) => {
    const { linkedPatientIds } = await import('../../src/fhir/compartment.js');
    expect(linkedPatientIds({ resourceType: 'AuditEvent', ...fields } as Resource, UPSTREAM_BASE)).toEqual(
      patients,
    );
  });
});

describe('linking references read without FHIRPath', () => {
  it('give the same patients as the FHIRPath expressions, for every type of the compartment', async () => {
    const { LINKING_PARAMS, linkedPatientIds } = await import('../../src/fhir/compartment.js');
    const { searchExpressionFor } = await import('../../src/fhir/definitions.js');
    const { evalFhirPath } = await import('@medplum/core');
    for (const [type, params] of LINKING_PARAMS) {
      for (const param of params) {
        const expression = searchExpressionFor(type, param) ?? '';
        for (const part of expression.split(' | ')) {
          const path = /^\(?[A-Za-z]+((?:\.[a-zA-Z]+)+)/.exec(part)?.[1]?.slice(1).split('.') ?? [];
          // the path filled with a Patient, a Group and another Patient, as arrays and as single values
          for (const shape of ['array', 'single'] as const) {
            const leaf = (ref: string) => ({ reference: ref });
            const build = (names: string[], ref: string): unknown => {
              const [head, ...rest] = names;
              if (!head) return leaf(ref);
              const child = build(rest, ref);
              return { [head]: shape === 'array' && rest.length > 0 ? [child] : child };
            };
            const resource = {
              resourceType: type,
              ...(build(path, 'Patient/p1') as object),
            } as Resource;
            const viaFhirPath = evalFhirPath(expression, resource)
              .map((v) => (v as { reference?: string }).reference ?? '')
              .filter((r) => r.startsWith('Patient/'))
              .map((r) => r.slice('Patient/'.length));
            expect(linkedPatientIds(resource, UPSTREAM_BASE).sort(), `${type}.${param} (${shape})`).toEqual(
              [...new Set(viaFhirPath)].sort(),
            );
          }
        }
      }
    }
  });
});

describe('relaying an upstream Bundle text with our links', () => {
  const ours = [{ relation: 'next', url: 'http://gw/fhir/Observation?_cursor=abc' }];
  it.each([
    [
      'links before the entries',
      {
        resourceType: 'Bundle',
        type: 'searchset',
        link: [
          { relation: 'self', url: 'x' },
          { relation: 'next', url: 'y"q' },
        ],
        entry: [{ resource: { resourceType: 'Patient', link: [{ other: { reference: 'Patient/1' } }] } }],
      },
      ours,
    ],
    [
      'links dropped (none of ours)',
      { resourceType: 'Bundle', type: 'searchset', link: [{ relation: 'self', url: 'x' }], entry: [] },
      [],
    ],
    [
      'the last member dropped',
      { resourceType: 'Bundle', link: [{ relation: 'self', url: 'x' }], type: 'searchset' },
      [],
    ],
    ['no links upstream', { resourceType: 'Bundle', type: 'searchset', total: 3 }, ours],
    [
      '"link":[ inside a string',
      {
        resourceType: 'Bundle',
        meta: { tag: [{ code: '"link":[' }] },
        type: 'searchset',
        link: [{ relation: 'next', url: 'a\\\\"b' }],
        entry: [],
      },
      ours,
    ],
  ])('%s', (_label, bundle, links) => {
    for (const text of [JSON.stringify(bundle), JSON.stringify(bundle, null, 2)]) {
      const expected: Record<string, unknown> = { ...bundle };
      delete expected.link;
      if (links.length) expected.link = links;
      expect(JSON.parse(withLinks(text, links, 'link' in bundle) as string)).toEqual(expected);
    }
  });

  it.each([
    ['ours to add', ours],
    ['none of ours', []],
  ])('leaves to serialising a Bundle whose links come after its entries (%s)', (_label, links) => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: [],
      link: [
        {
          relation: 'next',
          url: 'http://upstream/fhir/Patient?general-practitioner=Practitioner/p&_offset=3',
        },
      ],
    };
    expect(withLinks(JSON.stringify(bundle), links, true)).toBeUndefined();
  });

  it('leaves to serialising a Bundle with a second top-level "link", and relays one whose entries hold a "link"', () => {
    const upstream = '[{"relation":"next","url":"http://upstream/fhir?_getpages=x"}]';
    const first = `{"resourceType":"Bundle","link":[{"relation":"self","url":"x"}],"entry":[{"a":1}]`;
    // JSON.parse keeps the second: our links replaced the first, the second would be relayed raw
    expect(withLinks(`${first},"link":${upstream}}`, ours, true)).toBeUndefined();
    expect(withLinks(`${first},"link" : ${upstream}}`, ours, true)).toBeUndefined();
    expect(withLinks(`{"link":[],"link":${upstream},"entry":[]}`, ours, true)).toBeUndefined();
    const linkedPatient = `${first.replace('{"a":1}', '{"resource":{"resourceType":"Patient","link":[]}}')}}`;
    expect(JSON.parse(withLinks(linkedPatient, ours, true) as string).link).toEqual(ours);
    const inString = `${first.replace('{"a":1}', '{"a":"\\"link\\":[]"}')}}`;
    expect(JSON.parse(withLinks(inString, ours, true) as string).link).toEqual(ours);
  });

  it('leaves to serialising a Bundle with two "entry" members, and relays one whose entries hold an "entry"', () => {
    const two = '{"resourceType":"Bundle","type":"searchset","entry":[{"a":1}],"entry":[{"b":2}]}';
    expect(withLinks(two, ours, false)).toBeUndefined();
    expect(withLinks(two.replace('"entry":[{"b', '"entr\\u0079":[{"b'), ours, false)).toBeUndefined();
    expect(JSON.parse(two.replace('"entry":[{"b', '"entr\\u0079":[{"b'))).toEqual({ ...JSON.parse(two) });
    expect(withLinks(two.replace('"entry":[{"b', '"other":[{"b'), ours, false)).toBeDefined();
    const nested = '{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"List","entry":[]}}]}';
    expect(JSON.parse(withLinks(nested, ours, false) as string)).toEqual({
      ...JSON.parse(nested),
      link: ours,
    });
  });
});

describe('what a scoped read is cut to (_elements, _summary)', () => {
  it.each([
    ['', undefined],
    ['_summary=false', undefined],
    ['_summary=true', { kind: 'summary', mode: 'true' }],
    ['_summary=text', { kind: 'summary', mode: 'text' }],
    ['_summary=data', { kind: 'summary', mode: 'data' }],
    ['_elements=code,status', { kind: 'elements', names: new Set(['code', 'status']) }],
    ['_elements=Observation.code, value', { kind: 'elements', names: new Set(['code', 'value']) }],
    ['_summary=count', 400],
    ['_summary=TRUE', 400],
    ['_elements=code&_summary=true', 400],
    ['_elements=a&_elements=b', 400],
    ['_elements=Patient.name', 400],
    ['_elements=code.text', 400],
    ['_elements=', 400],
  ] as const)('%s asks for %o', (query, subset) => {
    const ask = () => readSubset('Observation', new URLSearchParams(query));
    if (subset === 400) expect(ask).toThrow(expect.objectContaining({ code: 'validation_failed' }));
    else expect(ask()).toEqual(subset);
  });

  it("leaves out a tag list that is not a list (the server's odd answer), keeping SUBSETTED", () => {
    const odd = {
      resourceType: 'Observation',
      id: 'o1',
      meta: { tag: { code: 'x' } },
    } as unknown as Resource;
    const cut = subsetOf(odd, { kind: 'summary', mode: 'true' }) as { meta: { tag: { code: string }[] } };
    expect(cut.meta.tag.map((t) => t.code)).toEqual(['SUBSETTED']);
  });

  it('names the parameter given twice', () => {
    for (const name of ['_summary', '_elements'])
      expect(() => readSubset('Observation', new URLSearchParams(`${name}=true&${name}=text`))).toThrow(
        expect.objectContaining({ errors: [expect.objectContaining({ path: name })] }),
      );
  });

  const observation = {
    resourceType: 'Observation',
    id: 'o1',
    meta: { versionId: '2' },
    text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">70 kg</div>' },
    status: 'final',
    _status: { extension: [] },
    code: { text: 'weight' },
    subject: { reference: 'Patient/a' },
    valueQuantity: { value: 70 },
    note: [{ text: 'after lunch' }],
  } as Resource;
  const tagged = { versionId: '2', tag: [expect.objectContaining({ code: 'SUBSETTED' })] };

  it.each([
    [
      { kind: 'elements', names: new Set(['code']) },
      ['resourceType', 'id', 'meta', 'status', '_status', 'code'],
    ],
    [
      { kind: 'elements', names: new Set(['value']) },
      ['resourceType', 'id', 'meta', 'status', '_status', 'code', 'valueQuantity'],
    ],
    [{ kind: 'summary', mode: 'text' }, ['resourceType', 'id', 'meta', 'text', 'status', '_status', 'code']],
    [
      { kind: 'summary', mode: 'data' },
      ['resourceType', 'id', 'meta', 'status', '_status', 'code', 'subject', 'valueQuantity', 'note'],
    ],
    [
      { kind: 'summary', mode: 'true' },
      ['resourceType', 'id', 'meta', 'status', '_status', 'code', 'subject', 'valueQuantity'],
    ],
  ] as const)('%o keeps %o', (subset, keys) => {
    const cut = subsetOf(observation, subset as Subset);
    expect(Object.keys(cut)).toEqual(keys);
    expect(cut.meta).toEqual(tagged);
    expect(observation.meta).toEqual({ versionId: '2' });
  });
});

describe("a practitioner's write, judged from its body", () => {
  const obs = (extra: Record<string, unknown> = {}) =>
    ({ resourceType: 'Observation', id: 'o1', subject: { reference: 'Patient/a' }, ...extra }) as Resource;
  const reach = (patients: string[], records: string[] = []) => ({
    patients,
    records: records.map((r) => ({ type: r.split('/')[0], id: r.split('/')[1] })),
  });
  it.each([
    ['a create for their patient', 'Observation', obs(), undefined, reach(['a'])],
    ['an update of the URL id', 'Observation', obs(), 'o1', reach(['a'])],
    ['an update whose body names another id', 'Observation', obs(), 'o2', { refused: 'not_the_url' }],
    ['a body of another type', 'Condition', obs(), undefined, { refused: 'not_the_url' }],
    ['no body at all', 'Observation', undefined, undefined, { refused: 'not_the_url' }],
    [
      'a Patient (not a clinical record)',
      'Patient',
      { resourceType: 'Patient' },
      undefined,
      { refused: 'not_writable' },
    ],
    [
      'an AuditEvent (a record of actions)',
      'AuditEvent',
      { resourceType: 'AuditEvent' },
      undefined,
      { refused: 'not_writable' },
    ],
    ['a Provenance', 'Provenance', { resourceType: 'Provenance' }, undefined, { refused: 'not_writable' }],
    [
      'other patients named and records to confirm (patients and the directory aside)',
      'Observation',
      obs({
        performer: [{ reference: 'Patient/b' }, { reference: 'Practitioner/p' }],
        encounter: { reference: 'Encounter/e' },
        basedOn: [{ reference: 'ServiceRequest/s' }, { reference: 'ServiceRequest/s' }],
      }),
      undefined,
      reach(['a', 'b'], ['Encounter/e', 'ServiceRequest/s']),
    ],
    [
      'a patient named twice counts once',
      'Observation',
      obs({ focus: [{ reference: 'Patient/a' }] }),
      undefined,
      reach(['a']),
    ],
    [
      'a reference written as a search',
      'Observation',
      obs({ focus: [{ reference: 'Condition?code=x' }] }),
      undefined,
      { refused: 'not_plain' },
    ],
    // HAPI reads a one-item array (or a number) where a string belongs as that string: unchecked, it
    // named another patient, or ran a search, past the checks
    [
      'a reference given as an array',
      'Observation',
      obs({ performer: [{ reference: ['Patient/b'] }] }),
      undefined,
      { refused: 'not_plain' },
    ],
    [
      'a search given as an array',
      'Observation',
      obs({ derivedFrom: [{ reference: ['Condition?subject=Patient/b&code:text=x'] }] }),
      undefined,
      { refused: 'not_plain' },
    ],
    [
      'a reference given as a number',
      'Observation',
      obs({ hasMember: [{ reference: 5 }] }),
      undefined,
      { refused: 'not_plain' },
    ],
    [
      'a reference given as null',
      'Observation',
      obs({ focus: [{ reference: null }] }),
      undefined,
      { refused: 'not_plain' },
    ],
    [
      'a Reference element named reference (Consent.provision.data) is read inside',
      'Consent',
      {
        resourceType: 'Consent',
        patient: { reference: 'Patient/a' },
        provision: { data: [{ meaning: 'related', reference: { reference: 'Patient/b' } }] },
      },
      undefined,
      reach(['a', 'b']),
    ],
    [
      'an absolute subject',
      'Observation',
      obs({ subject: { reference: 'http://fhir.example/Patient/a' } }),
      undefined,
      { refused: 'not_plain' },
    ],
    [
      'no subject: the record of nobody',
      'Observation',
      { resourceType: 'Observation' },
      undefined,
      { refused: 'no_patient' },
    ],
    [
      'a Group as subject',
      'Observation',
      obs({ subject: { reference: 'Group/g' } }),
      undefined,
      { refused: 'no_patient' },
    ],
    [
      'a subject given as a bare string',
      'Observation',
      obs({ subject: 'Patient/a' }),
      undefined,
      { refused: 'no_patient' },
    ],
    // R4 allows one subject: HAPI keeps one of a list, so whose record it is would be the server's guess
    [
      'a subject given as a list of two of their patients',
      'Observation',
      obs({ subject: [{ reference: 'Patient/a' }, { reference: 'Patient/b' }] }),
      undefined,
      { refused: 'not_one_value' },
    ],
    [
      'a subject given as a list of one',
      'Observation',
      obs({ subject: [{ reference: 'Patient/a' }] }),
      undefined,
      { refused: 'not_one_value' },
    ],
    [
      'an Account naming two patients (R4 lets its subject repeat)',
      'Account',
      {
        resourceType: 'Account',
        status: 'active',
        subject: [{ reference: 'Patient/a' }, { reference: 'Patient/b' }],
      },
      undefined,
      reach(['a', 'b']),
    ],
    [
      'one linking element off the patient among two',
      'Encounter',
      {
        resourceType: 'Encounter',
        subject: { reference: 'Patient/a' },
        participant: [{ individual: { reference: 'Practitioner/p' } }],
      },
      undefined,
      reach(['a']),
    ],
  ] as const)('%s', (_what, type, resource, id, expected) => {
    expect(practitionerWriteReach(type, resource as Resource | undefined, id, directory)).toEqual(expected);
  });
});

describe('which records a practitioner must be able to read to refer to them', () => {
  it.each([
    [
      ['Observation/1', 'Observation/1', 'Condition/c'],
      ['Observation/1', 'Condition/c'],
    ],
    [['Patient/a', '#c1', 'Practitioner/p', 'Organization/o', 'Medication/m'], []],
    [
      ['Encounter/e', 'Device/d'],
      ['Encounter/e', 'Device/d'],
    ],
  ])('%o: %o', (references, records) => {
    expect(recordsToConfirm(references, directory).map(({ type, id }) => `${type}/${id}`)).toEqual(records);
  });
});

describe("what an admin's forwarded write may be", () => {
  const target = (path: string) => parseFhirPath(`/fhir/${path}`);
  it.each([
    ['PUT', 'Observation/1', '', undefined, undefined],
    ['PUT', 'Observation', 'code=x', undefined, undefined],
    ['PUT', 'Observation', 'code=x', 'W/"1"', 400],
    ['PATCH', 'Observation', 'code=x', undefined, undefined],
    ['PATCH', 'Observation', '', undefined, 405],
    ['DELETE', 'Observation', '', undefined, 405],
    ['PUT', 'Patient', 'name=x', undefined, 400],
    ['DELETE', 'Practitioner', 'name=x', undefined, 400],
    ['PATCH', 'Patient', 'name=x', undefined, undefined],
    ['PUT', '', '', undefined, 405],
    ['DELETE', '', 'name=x', undefined, 405],
    ['PUT', 'Patient/1', '', 'W/"1"', undefined],
    ['GET', 'Patient', '', undefined, undefined],
    ['POST', 'Patient/1/$meta-add', '', undefined, undefined],
    ['DELETE', 'Patient/1/_history/1', '', undefined, 405],
    ['DELETE', 'Patient/1/_history', '', undefined, 405],
    ['PUT', 'Observation/1/_history/3', '', undefined, 405],
    ['PATCH', 'Observation/1/_history/3', '', undefined, 405],
    ['POST', 'Observation/1/_history', '', undefined, 405],
    ['DELETE', 'Observation/_history', '', undefined, 405],
    ['DELETE', '_history', '', undefined, 405],
    ['GET', 'Patient/1/_history/1', '', undefined, undefined],
  ] as const)('%s %s?%s with If-Match %s: %s', (method, path, query, ifMatch, status) => {
    const check = () => assertAdminWrite(method, target(path), new URLSearchParams(query), ifMatch);
    if (status === undefined) expect(check).not.toThrow();
    else expect(check).toThrow(expect.objectContaining({ status }));
  });

  it.each([
    ['[]', 'application/json-patch+json', undefined],
    ['{"resourceType":"Parameters"}', 'application/fhir+json', undefined],
    ['', 'application/json-patch+json', 400],
    ['{"op":"add"}', 'application/json-patch+json', 400],
    ['[]', 'application/fhir+json', 400],
    ['{"resourceType":"Observation"}', 'application/fhir+json', 400],
    ['[{"op":"replace","path":"/status","value":"final"}]', 'application/json-patch+json', undefined],
    ['[{"op":"replace","path":"/id","value":"x"}]', 'application/json-patch+json', 400],
    ['[{"op":"remove","path":"/resourceType"}]', 'application/json-patch+json', 400],
    ['[{"op":"replace","path":"","value":{}}]', 'application/json-patch+json', 400],
    ['[{"op":"copy","from":"/id","path":"/language"}]', 'application/json-patch+json', 400],
    ['[{"op":"replace","path":"/identifier/0/id","value":"x"}]', 'application/json-patch+json', undefined],
    [fhirPathPatch('replace', 'Observation.id'), 'application/fhir+json', 400],
    [fhirPathPatch('replace', ' id '), 'application/fhir+json', 400],
    [fhirPathPatch('delete', 'Observation'), 'application/fhir+json', 400],
    [fhirPathPatch('replace', '%resource.resourceType'), 'application/fhir+json', 400],
    [fhirPathPatch('add', 'Observation', 'id'), 'application/fhir+json', 400],
    [fhirPathPatch('add', 'Observation', 'note'), 'application/fhir+json', undefined],
    [fhirPathPatch('replace', 'Observation.status'), 'application/fhir+json', undefined],
    [fhirPathPatch('replace', 'Observation.code.id'), 'application/fhir+json', undefined],
    // the patcher steps over these tokens: `/__proto__/id` reached `/id`
    ['[{"op":"replace","path":"/__proto__/id","value":"x"}]', 'application/json-patch+json', 400],
    ['[{"op":"replace","path":"/constructor/resourceType","value":"x"}]', 'application/json-patch+json', 400],
    ['[{"op":"replace","path":"/i~1d","value":"x"}]', 'application/json-patch+json', undefined],
    [fhirPathPatch('replace', 'Observation.`id`'), 'application/fhir+json', 400],
    [fhirPathPatch('replace', 'Observation./*c*/id'), 'application/fhir+json', 400],
    [fhirPathPatch('replace', 'DomainResource.id'), 'application/fhir+json', 400],
    [fhirPathPatch('replace', '$this.id'), 'application/fhir+json', 400],
    [fhirPathPatch('replace', 'Observation.where(true).id'), 'application/fhir+json', 400],
    [
      fhirPathPatch('replace', "Observation.identifier.where(system='x.y').value"),
      'application/fhir+json',
      undefined,
    ],
    [fhirPathPatch('replace', 'Observation.id', undefined, 'valueCode'), 'application/fhir+json', 400],
    [fhirPathPatch('add', 'Observation', 'id', 'valueCode'), 'application/fhir+json', 400],
  ] as const)('PATCH body %s as %s: %s', (body, contentType, status) => {
    const check = () => assertPatchBody(target('Observation/1'), contentType, body);
    if (status === undefined) expect(check).not.toThrow();
    else expect(check).toThrow(expect.objectContaining({ status }));
  });

  const bundle = (type: string, ...entry: unknown[]) =>
    JSON.stringify({ resourceType: 'Bundle', type, entry });
  it.each([
    [bundle('batch'), []],
    [bundle('transaction', { request: { method: 'PUT', url: 'Patient/1' } }), ['PUT Patient/1']],
    [bundle('batch', { request: { method: 'delete', url: 'Practitioner/p' } }), ['DELETE Practitioner/p']],
    [bundle('batch', { request: { method: 'POST', url: 'Observation' } }), []],
    [bundle('batch', { request: { method: 'GET', url: 'Patient?name=x' } }), []],
    [bundle('batch', { request: { method: 'PATCH', url: 'Patient/1' } }), []],
    [bundle('transaction', { request: { method: 'POST', url: 'Patient' } }), 400],
    [bundle('batch', { request: { method: 'PUT', url: 'Patient?identifier=x' } }), 400],
    [bundle('batch', { request: { method: 'DELETE', url: 'Patient/1/_history/2' } }), 400],
    [bundle('batch', {}), 400],
    [bundle('batch', { request: { method: 'POST', url: '/Patient' } }), 400],
    [bundle('batch', { request: { method: 'DELETE', url: 'http://x/fhir/Patient/1' } }), 400],
    [bundle('batch', { request: { method: 'GET', url: 'Observation/../Patient' } }), 400],
    [
      bundle('batch', { request: { method: 'POST', url: 'Basic' }, resource: { resourceType: 'Patient' } }),
      400,
    ],
    [
      bundle('batch', {
        request: { method: 'POST', url: 'Patient/$match' },
        resource: { resourceType: 'Parameters' },
      }),
      [],
    ],
    [bundle('batch', { request: { method: 'GET', url: 'Patient/1/$everything' } }), []],
    [bundle('batch', { request: { url: 'Observation' } }), 400],
    [bundle('batch', { request: { method: 'PUT', url: 'Observation/1', ifMatch: 'W/"2"' } }), []],
    [bundle('batch', { request: { method: 'DELETE', url: 'Observation/1', ifMatch: '*' } }), []],
    [bundle('batch', { request: { method: 'PATCH', url: 'Observation/1', ifMatch: 'W/"1", "2"' } }), []],
    [bundle('batch', { request: { method: 'PUT', url: 'Observation/1', ifMatch: 'abc' } }), 400],
    [bundle('batch', { request: { method: 'PUT', url: 'Observation/1', ifMatch: 3 } }), 400],
    [bundle('batch', { request: { method: 'POST', url: 'Observation', ifMatch: '*' } }), 400],
    [bundle('batch', { request: { method: 'GET', url: 'Observation/1', ifMatch: '*' } }), 400],
    [bundle('batch', { request: { method: 'PUT', url: 'Observation?code=x', ifMatch: '*' } }), 400],
    [bundle('batch', { request: { method: 'DELETE', url: 'Observation/1/_history/1', ifMatch: '*' } }), 400],
    [bundle('batch', { request: { method: 'POST', url: 'Observation/1/$meta-add', ifMatch: '*' } }), 400],
    [bundle('collection'), 400],
    ['{"resourceType":"Patient"}', 400],
    ['not json', 400],
    ['{"resourceType":"Bundle","type":"batch","type":"collection"}', 400],
    ['{"resourceType":"Bundle","type":"batch","entry":[],"n":1e400}', 400],
  ] as const)('batch body %s: %o', (body, result) => {
    const check = () => assertBatchBody(body).map(({ method, type, id }) => `${method} ${type}/${id}`);
    if (result === 400) expect(check).toThrow(expect.objectContaining({ status: 400 }));
    else expect(check()).toEqual(result);
  });
});

describe("a batch's entries with ifMatch, resolved by the gateway", () => {
  const put = (url: string, ifMatch?: string) => ({
    request: { method: 'PUT' as const, url, ...(ifMatch ? { ifMatch } : {}) },
  });
  const batch = (...entry: ReturnType<typeof put>[]): Bundle => ({
    resourceType: 'Bundle',
    type: 'batch',
    entry,
  });
  const statuses = (b: Bundle) => (b.entry ?? []).map((e) => e.response?.status ?? e.request?.url);

  it('finds the entries that carry one', () => {
    expect(versionedEntries(batch(put('Observation/a'), put('Observation/b', '*')))).toEqual([
      { index: 1, type: 'Observation', id: 'b', ifMatch: '*' },
    ]);
  });

  it.each([
    [
      new Map([[0, 'W/"2"']]),
      new Set<number>(),
      [{ url: 'Observation/a', ifMatch: 'W/"2"' }, { url: 'Observation/b' }],
    ],
    [new Map([[0, undefined]]), new Set<number>(), [{ url: 'Observation/a' }, { url: 'Observation/b' }]],
    [new Map(), new Set([0]), [{ url: 'Observation/b' }]],
  ])('sends each resolved tag %o, refused %o left out', (tags, refused, sent) => {
    const out = withResolvedEntries(batch(put('Observation/a', '*'), put('Observation/b')), tags, refused);
    expect(
      (out.entry ?? []).map((e) => ({
        url: e.request?.url,
        ...(e.request?.ifMatch ? { ifMatch: e.request.ifMatch } : {}),
      })),
    ).toEqual(sent);
  });

  it.each([
    [['200 OK', '201 Created'], [1], ['200 OK', '412 Precondition Failed', '201 Created']],
    [['200 OK'], [0, 2], ['412 Precondition Failed', '200 OK', '412 Precondition Failed']],
    [[], [0], ['412 Precondition Failed']],
    [['200 OK'], [], ['200 OK']],
  ])('answers %o with a 412 in places %o', (answered, refused, expected) => {
    const answer: Bundle = {
      resourceType: 'Bundle',
      type: 'batch-response',
      entry: answered.map((status) => ({ response: { status } })),
    };
    expect(statuses(withRefusedEntries(answer, new Set(refused)))).toEqual(expected);
  });
});

describe("a caller's reach, from the verified token alone", () => {
  const caller = (role: 'admin' | 'patient' | 'practitioner', fhirId: string | null) =>
    ({ userId: 'u1', role, fhirId, claims: {} }) as unknown as Parameters<typeof scopeOf>[0];
  it.each([
    ['admin', null, { kind: 'all' }],
    ['admin', 'p1', { kind: 'all' }],
    ['patient', 'p1', { kind: 'patient', patientId: 'p1' }],
    ['practitioner', 'd1', { kind: 'panel', practitionerId: 'd1' }],
    // an account not linked to a FHIR record reaches nothing (deny by default)
    ['patient', null, { kind: 'none' }],
    ['practitioner', null, { kind: 'none' }],
  ] as const)('a %s linked to %s reaches %j', (role, fhirId, scope) => {
    expect(scopeOf(caller(role, fhirId), directory)).toEqual({ ...scope, directory });
  });
});

describe("what a write's answer carries (Prefer: return)", () => {
  const resource = { resourceType: 'Patient', id: '1' };
  it.each([
    [undefined, 'resource'],
    ['return=representation', 'resource'],
    ['return=minimal', 'nothing'],
    ['RETURN=MINIMAL', 'nothing'],
    ['respond-async, return=minimal', 'nothing'],
    ['return=OperationOutcome', 'outcome'],
    ['return=minimalist', 'resource'],
  ])('Prefer %s gives the %s', (prefer, expected) => {
    const body = preferredBody(prefer, resource);
    if (expected === 'resource') expect(body).toBe(resource);
    if (expected === 'nothing') expect(body).toBeUndefined();
    if (expected === 'outcome') expect(body).toMatchObject({ resourceType: 'OperationOutcome' });
  });
});

describe('conditional reads answered as RFC 9110 says where the upstream does not', () => {
  const result = (status: number, headers: Record<string, string> = {}) => ({
    status,
    headers: { 'last-modified': 'Tue, 01 Dec 2026 00:00:00 GMT', ...headers },
    body: status === 200 ? { resourceType: 'Patient' } : undefined,
    ...(status === 200 ? { text: '{"resourceType":"Patient"}' } : {}),
  });

  it.each([
    ['a 304 without an ETag, one tag asked', result(304), ' W/"3" ', 'W/"3"'],
    ['a 304 with its own ETag', result(304, { etag: 'W/"4"' }), 'W/"3"', 'W/"4"'],
    ['a 304, several tags asked', result(304), 'W/"3", W/"4"', undefined],
    ['a 304, any tag asked', result(304), '*', undefined],
    ['a 304 to If-Modified-Since alone', result(304), undefined, undefined],
    ['a 200', result(200), 'W/"3"', undefined],
  ])('%s carries ETag %s', (_, upstream, ifNoneMatch, etag) => {
    expect(withMatchedEtag(upstream, ifNoneMatch).headers.etag).toBe(etag);
  });

  it.each([
    ['a read that found it, any tag asked', 200, '*', 304],
    ['a read that found it, any tag asked, spaced', 200, ' * ', 304],
    ['a read that found it, one tag asked', 200, 'W/"3"', 200],
    ['a read that found it, nothing asked', 200, undefined, 200],
    ['a read answered 304 already', 304, '*', 304],
  ])('%s answers %s', (_, status, ifNoneMatch, answered) => {
    const read = notModifiedIfAny(result(status, { etag: 'W/"3"' }), ifNoneMatch);
    expect(read.status).toBe(answered);
    if (answered === 304) {
      expect(read.body).toBeUndefined();
      expect(read.text).toBeUndefined();
      expect(read.headers).toMatchObject({ etag: 'W/"3"', 'last-modified': expect.any(String) });
    }
  });
});

it.each([
  ['Observation', '_count=5', '_count=5&subject=Patient%2Fp1'],
  ['Condition', '', 'patient=Patient%2Fp1'],
  ['AuditEvent', '', 'entity=Patient%2Fp1'],
])('the compartment search of %s (%s) is the search %s', (type, asked, expected) => {
  expect(compartmentSearchQuery(type, 'p1', new URLSearchParams(asked)).toString()).toBe(expected);
});

describe("what a patient's or practitioner's passthrough request may be", () => {
  const query = (q = '') => new URLSearchParams(q);
  it.each([
    // reads and searches, for both scoped roles
    ['patient', 'GET', 'Observation', '', undefined, 'Observation'],
    ['patient', 'GET', 'Patient/p1', '', undefined, 'Patient'],
    ['patient', 'GET', 'Patient/p1/_history', '', undefined, 'Patient'],
    ['patient', 'GET', 'Patient/p1/_history/2', '', undefined, 'Patient'],
    ['panel', 'GET', 'Observation', '_count=5', undefined, 'Observation'],
    // a practitioner writes without conditions: create on the type, update on the id
    ['panel', 'POST', 'Observation', '', undefined, 'Observation'],
    ['panel', 'PUT', 'Observation/o1', '', undefined, 'Observation'],
    // refused for every scoped role
    ['patient', 'GET', 'Patient/p1/$everything', '', undefined, 'forbidden'],
    ['panel', 'POST', 'Observation/$validate', '', undefined, 'forbidden'],
    // a Patient compartment search of a clinical type is read as the type's search (compartmentSearchQuery)
    ['patient', 'GET', 'Patient/p1/Observation', '', undefined, 'Observation'],
    ['panel', 'GET', 'Patient/p1/Condition', '', undefined, 'Condition'],
    ['patient', 'GET', 'Patient/p1/Practitioner', '', undefined, 'validation_failed'],
    ['patient', 'GET', 'Encounter/e1/Observation', '', undefined, 'validation_failed'],
    ['panel', 'POST', 'Patient/p1/Observation', '', undefined, 'validation_failed'],
    ['patient', 'GET', '', '', undefined, 'forbidden'],
    ['panel', 'POST', '', '', undefined, 'forbidden'],
    ['panel', 'GET', '_history', '', undefined, 'forbidden'],
    ['patient', 'GET', 'Observation/_history', '', undefined, 'forbidden'],
    // writes: a patient never; a practitioner never deletes, patches or writes history
    ['patient', 'POST', 'Observation', '', undefined, 'forbidden'],
    ['patient', 'PUT', 'Patient/p1', '', undefined, 'forbidden'],
    ['none', 'POST', 'Observation', '', undefined, 'forbidden'],
    ['panel', 'DELETE', 'Observation/o1', '', undefined, 'forbidden'],
    ['panel', 'PATCH', 'Observation/o1', '', undefined, 'forbidden'],
    ['panel', 'PUT', 'Observation/o1/_history/1', '', undefined, 'forbidden'],
    // conditions run a search upstream outside our checks: an oracle on other patients' data
    ['panel', 'POST', 'Observation', '', 'subject=Patient/other', 'forbidden'],
    ['panel', 'PUT', 'Observation', 'subject=Patient/other', undefined, 'forbidden'],
    ['panel', 'POST', 'Observation', '_format=json', undefined, 'forbidden'],
    // the method and the path agree
    ['panel', 'POST', 'Observation/o1', '', undefined, 'forbidden'],
    ['panel', 'PUT', 'Observation', '', undefined, 'forbidden'],
  ] as const)(
    '%s: %s /fhir/%s?%s (If-None-Exist %s) -> %s',
    (scope, method, path, q, ifNoneExist, expected) => {
      const check = () =>
        assertScopedInteraction(method, parseFhirPath(`/fhir/${path}`), scope, {
          query: query(q),
          ifNoneExist,
        });
      if (expected === 'forbidden' || expected === 'validation_failed')
        expect(check).toThrow(expect.objectContaining({ code: expected }));
      else expect(check()).toBe(expected);
    },
  );
});

describe("a batch answer's outcomes, in the gateway's words", () => {
  const leaky = {
    resourceType: 'OperationOutcome',
    issue: [
      { severity: 'error', code: 'processing', diagnostics: 'HAPI-0450 jdbc:h2:mem host db-7 Patient/other' },
    ],
  };
  const answer = (entry: unknown) =>
    ({ resourceType: 'Bundle', type: 'batch-response', entry: [entry] }) as Bundle;
  const only = (bundle: Bundle) =>
    bundle.entry?.[0] as Record<string, unknown> & { response?: Record<string, unknown> };

  it.each([
    [
      'a created entry without an outcome',
      { response: { status: '201 Created', location: 'Patient/1/_history/1' } },
      undefined,
    ],
    [
      'a created entry with the upstream outcome',
      { response: { status: '201 Created', outcome: leaky } },
      'informational',
    ],
    ['a refused entry', { response: { status: '400 Bad Request', outcome: leaky } }, 'invalid'],
    ['a missing record', { response: { status: '404 Not Found', outcome: leaky } }, 'not-found'],
    ['a server failure', { response: { status: '500 Internal Server Error', outcome: leaky } }, 'exception'],
    [
      'an outcome in the resource place',
      { resource: leaky, response: { status: '412 Precondition Failed' } },
      'conflict',
    ],
  ])('%s', (_, entry, issueCode) => {
    const ours = only(withOurOutcomes(answer(entry)));
    expect(JSON.stringify(ours)).not.toMatch(/HAPI|jdbc|db-7|Patient\/other/);
    expect(ours.resource).toBeUndefined();
    expect(ours.response?.status).toBe(entry.response.status);
    const outcome = ours.response?.outcome as { issue: { code: string }[] } | undefined;
    expect(outcome?.issue[0]?.code).toBe(issueCode);
  });

  it("keeps a resource the entry answered with, and the entries' other members", () => {
    const patient = { resourceType: 'Patient', id: '1' };
    const ours = only(
      withOurOutcomes(
        answer({ fullUrl: 'http://x/Patient/1', resource: patient, response: { status: '200 OK' } }),
      ),
    );
    expect(ours).toEqual({
      fullUrl: 'http://x/Patient/1',
      resource: patient,
      response: { status: '200 OK' },
    });
  });
});

describe("a caller's JSON body, sent as it came", () => {
  it.each([
    ['{"value":1.50}', undefined],
    ['{"value":98765432109876543210}', undefined],
    ['{"a":{"b":1},"a":{"b":1}}', undefined],
    ['{"toString":1,"__proto__":{}}', undefined],
    ['{"value":1e400}', 400],
    ['[{"value":-1e999}]', 400],
    ['{"subject":1,"subject":2}', 400],
    ['{"subject":1,"\\u0073ubject":2}', 400],
    ['{"a":[{"b":1,"b":"1"}]}', 400],
    ['', 400],
    ['{"a":', 400],
  ] as const)('%s: %s', (text, status) => {
    const parse = () => parseCallerBody(text);
    if (status === undefined) expect(parse().text).toBe(text);
    else expect(parse).toThrow(expect.objectContaining({ status }));
  });
});

describe("what an admin's forwarded request may be answered", () => {
  const obs = { resourceType: 'Observation', id: '1' };
  const loc = { location: 'http://up/Observation/1/_history/1' };
  it.each([
    ['GET', { type: 'Observation', id: '1' }, 200, obs, {}, false],
    ['GET', { type: 'Observation', id: '1' }, 304, undefined, {}, false],
    ['GET', { type: 'Observation', id: '1' }, 200, { resourceType: 'Observation', id: '2' }, {}, true],
    ['GET', { type: 'Observation', id: '1' }, 200, { resourceType: 'Patient', id: '1' }, {}, true],
    ['GET', { type: 'Observation', id: '1' }, 200, { resourceType: 'OperationOutcome' }, {}, true],
    // the read of one record answered with a Bundle (review S1: relayed as 200)
    ['GET', { type: 'Patient', id: '1' }, 200, { resourceType: 'Bundle' }, {}, true],
    [
      'GET',
      { type: 'Patient', id: '1', history: true, versionId: '2' },
      200,
      { resourceType: 'Bundle' },
      {},
      true,
    ],
    ['GET', { type: 'Bundle', id: '1' }, 200, { resourceType: 'Bundle', id: '1' }, {}, false],
    ['GET', { type: 'Patient' }, 200, { resourceType: 'Bundle' }, {}, false],
    [
      'GET',
      { type: 'Patient', id: '1', compartmentType: 'Observation' },
      200,
      { resourceType: 'Bundle' },
      {},
      false,
    ],
    ['GET', { type: 'Patient', id: '1', history: true }, 200, { resourceType: 'Bundle' }, {}, false],
    [
      'GET',
      { type: 'Patient', id: '1', operation: '$everything' },
      200,
      { resourceType: 'Bundle' },
      {},
      false,
    ],
    ['POST', { type: 'Observation' }, 304, undefined, {}, true],
    ['POST', { type: 'Observation' }, 201, obs, loc, false],
    ['POST', { type: 'Observation' }, 201, undefined, loc, false],
    ['POST', { type: 'Observation' }, 201, undefined, {}, true],
    ['POST', { type: 'Observation' }, 200, { resourceType: 'Patient', id: 'x1' }, {}, true],
    ['POST', { type: 'Observation' }, 201, { resourceType: 'OperationOutcome' }, loc, false],
    ['PUT', { type: 'Observation', id: '1' }, 200, obs, {}, false],
    ['PUT', { type: 'Observation', id: '1' }, 200, { resourceType: 'Observation', id: '9' }, {}, true],
    ['PUT', { type: 'Observation' }, 200, { resourceType: 'Observation', id: '9' }, {}, false],
    ['PATCH', { type: 'Observation', id: '1' }, 200, obs, {}, false],
    ['DELETE', { type: 'Observation', id: '1' }, 200, { resourceType: 'OperationOutcome' }, {}, false],
    ['DELETE', { type: 'Observation', id: '1' }, 204, undefined, {}, false],
    [
      'POST',
      { type: 'Patient', id: '1', operation: '$meta-add' },
      200,
      { resourceType: 'Parameters' },
      {},
      false,
    ],
    ['POST', {}, 200, { resourceType: 'Bundle' }, {}, false],
  ] as const)('%s %o answered %i %o %o: refused %s', (method, target, status, body, headers, refused) => {
    const reason = forwardedAnswerMismatch(method, target, { status, body, headers });
    expect(reason !== undefined).toBe(refused);
  });
});
