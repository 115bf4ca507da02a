import { getSearchParameter } from '@medplum/core';
import { AppError } from '../errors.js';
import { FHIR_ID_PATTERN } from '../http/schemas.js';
import {
  COMPARTMENT_PARAMS,
  definedSearchParams,
  GENERAL_PRACTITIONER_PARAM,
  isReadableType,
  LINKING_PARAMS,
  patientIdOf,
  type Scope,
} from './compartment.js';
import { searchExpressionFor } from './definitions.js';
import type { FhirTarget } from './fhirPath.js';
import { isJsonFormat, refuse } from './negotiation.js';

/**
 * The passthrough's request rules. Search checks for scoped callers (patients, practitioners):
 * only allow-listed parameters, the compartment parameter added (or checked, when the client gave
 * one), nothing that could reach outside the scope; an admin's search passes unchanged but for
 * its values. What a scoped role's interaction may be, history parameters and cursor companions.
 * The HTTP-level rules every caller is held to (query size, format, bodies, entity tags,
 * `Prefer`) are in negotiation.ts.
 */

/** Result parameters a scoped search may use; everything else that starts with `_` is refused. */
const CONTROL_PARAMS: ReadonlySet<string> = new Set([
  '_id',
  '_lastUpdated',
  '_count',
  '_sort',
  '_include',
  '_revinclude',
  '_summary',
  '_elements',
  '_total',
  '_profile',
  '_tag',
  '_security',
]);

/** Refused outright: each can select or reveal resources outside the scope (HAPI #6065 `_has` oracle, ...). */
const FORBIDDEN_PARAMS: ReadonlySet<string> = new Set([
  '_has',
  '_filter',
  '_query',
  '_list',
  '_contained',
  '_containedType',
  '_compartment',
  '_text',
  '_content',
  '_type',
  '_source',
]);

/** Whether a scoped search may name the parameter at all (what /fhir/metadata lists). */
export function isScopedSearchParam(name: string): boolean {
  if (FORBIDDEN_PARAMS.has(name) || name.startsWith('_has')) return false;
  return !name.startsWith('_') || CONTROL_PARAMS.has(name);
}

/**
 * Modifiers a client may use; `:identifier` and the like could match references we cannot check.
 * Not `:iterate`: it belongs to `_include` and `_revinclude`, where it is refused (checkInclude).
 */
const ALLOWED_MODIFIERS: ReadonlySet<string> = new Set([
  'missing',
  'exact',
  'contains',
  'not',
  'text',
  'above',
  'below',
  'in',
  'not-in',
  'of-type',
]);

export type NarrowedSearch =
  /** `named`: the patients the client's linking parameters named (a practitioner's are checked against the panel). */
  | { readonly kind: 'search'; readonly params: URLSearchParams; readonly named: readonly string[] }
  /** `outside`: the patients named outside the scope, for the audit (none when nothing named decided it). */
  | { readonly kind: 'empty'; readonly outside: readonly string[] };

const EMPTY: NarrowedSearch = { kind: 'empty', outside: [] };

const NUMBER = String.raw`-?\d{1,3}(?:\.\d{1,20})?`;
const NEAR = new RegExp(
  String.raw`^(${NUMBER})\|(${NUMBER})(?:\|(\d{1,9}(?:\.\d{1,20})?)(?:\|([^|]{1,20}))?)?$`,
);

/** `near=latitude|longitude[|distance[|units]]` (R4 Location), in range. */
export function isNearValue(value: string): boolean {
  const parts = NEAR.exec(value);
  if (!parts) return false;
  const [latitude, longitude] = [Number(parts[1]), Number(parts[2])];
  return Math.abs(latitude) <= 90 && Math.abs(longitude) <= 180;
}

/**
 * Values the FHIR server cannot read are the caller's mistake: HAPI answered a malformed `near`
 * and a negative `_offset` with a 500 (a 502 and an error log here), and worked ~50 s on
 * `value-quantity=9e9999999` (a number of ten million digits) after the gateway gave up.
 */
function assertReadableValues(type: string, query: URLSearchParams): void {
  for (const [name, value] of query) {
    const [base, modifier] = splitName(name);
    if (base === 'near' && !isNearValue(value))
      throw refuse(
        name,
        'must be latitude|longitude, optionally |distance and |units (e.g. 42.25|-83.69|10|km)',
      );
    if (base === '_offset' && !/^\d{1,9}$/.test(value)) throw refuse(name, 'must be a whole number from 0');
    if (modifier !== 'missing' && !numbersReadable(searchParamKind(type, base), value))
      throw refuse(
        name,
        'must be a number of at most 32 digits before and after the point and an exponent of at most 3 digits (e.g. gt5.4, 1e-3)',
      );
  }
}

/** A FHIR search number (search.html#number) with its prefix, of a size every server reads at once. */
const SEARCH_NUMBER =
  /^(?:eq|ne|gt|lt|ge|le|sa|eb|ap)?[-+]?(?:\d{1,32}(?:\.\d{0,32})?|\.\d{1,32})(?:[eE][-+]?\d{1,3})?$/;

/**
 * Whether every number in a search value is a SEARCH_NUMBER: a number parameter's values, a
 * quantity's (`5.4|system|code`), and a composite quantity's last part (`code$gt5.4`).
 */
function numbersReadable(kind: NumericKind | undefined, value: string): boolean {
  if (kind === undefined) return true;
  // FHIR escapes a comma inside a value as `\,`; an unescaped one separates alternatives
  return value.split(/(?<!\\),/).every((alternative) => {
    const part =
      kind === 'composite-quantity' ? alternative.slice(alternative.lastIndexOf('$') + 1) : alternative;
    return SEARCH_NUMBER.test(kind === 'number' ? part : (part.split('|')[0] ?? ''));
  });
}

type NumericKind = 'number' | 'quantity' | 'composite-quantity';

/** How a search parameter's values hold numbers, if they do (R4's composites name theirs `*-value-quantity`). */
function searchParamKind(type: string, code: string): NumericKind | undefined {
  const kind = getSearchParameter(type, code)?.type;
  if (kind === 'number' || kind === 'quantity') return kind;
  return kind === 'composite' && code.endsWith('-quantity') ? 'composite-quantity' : undefined;
}

/** `subject:Patient` -> ['subject', 'Patient']. */
function splitName(name: string): [string, string | undefined] {
  const index = name.indexOf(':');
  return index < 0 ? [name, undefined] : [name.slice(0, index), name.slice(index + 1)];
}

function checkInclude(name: string, value: string): void {
  if (name.endsWith(':iterate') || value === '*' || value.endsWith(':*')) {
    throw refuse(name, 'wildcard and iterate includes are not allowed');
  }
  if (!/^[A-Z][A-Za-z]+:[a-z][a-z0-9-]*(:[A-Z][A-Za-z]+)?$/.test(value))
    throw refuse(name, 'must be Type:parameter[:TargetType]');
}

function checkName(type: string, name: string, defined: ReadonlySet<string>): void {
  const [base, modifier] = splitName(name);
  if (base.includes('.')) throw refuse(name, 'chained parameters are not allowed');
  if (FORBIDDEN_PARAMS.has(base) || base.startsWith('_has')) throw refuse(name, 'is not allowed');
  if (base.startsWith('_')) {
    if (!CONTROL_PARAMS.has(base)) throw refuse(name, 'is not allowed');
  } else if (!defined.has(base)) {
    throw refuse(name, `is not a search parameter of ${type}`);
  }
  if (modifier !== undefined && !ALLOWED_MODIFIERS.has(modifier) && !/^[A-Z][A-Za-z]+$/.test(modifier)) {
    throw refuse(name, `the :${modifier} modifier is not allowed`);
  }
}

/** Patients a client-given value names: `A`, `Patient/A`, `https://x/fhir/Patient/A`, `A,B` (OR). */
function patientsNamed(value: string, bareIsPatient: boolean): { ids: string[]; other: boolean } {
  const ids: string[] = [];
  let other = false;
  for (const part of value.split(',')) {
    const id = patientIdOf(part) ?? (bareIsPatient && FHIR_ID_PATTERN.test(part) ? part : undefined);
    if (id) ids.push(id);
    else if (/(^|\/)Patient\//.test(part) || bareIsPatient) other = true;
  }
  return { ids, other };
}

/** `subject:Patient.general-practitioner`: the server keeps only records of a practitioner's patients. */
function panelChain(linkingParam: string): string {
  return `${linkingParam}:Patient.${GENERAL_PRACTITIONER_PARAM}`;
}

/**
 * Checks a scoped search and returns it narrowed to the scope, or `empty` when the client
 * named a patient outside it (never their data, and no upstream call is needed).
 *
 * A patient's searches name their own id. A practitioner's panel is never listed (a GP has
 * thousands of patients; an id list outgrows every server's URL limit): the server narrows
 * with `Patient?general-practitioner=Practitioner/{me}` or the chained
 * `{link}:Patient.general-practitioner=Practitioner/{me}`, ANDed with whatever patients the
 * client named, and the response check still tests every entry.
 */
export function narrowSearch(type: string, query: URLSearchParams, scope: Scope): NarrowedSearch {
  assertReadableValues(type, query);
  if (scope.kind === 'all') return { kind: 'search', params: new URLSearchParams(query), named: [] };
  if (!isReadableType(type, scope))
    throw new AppError('forbidden', { detail: `Your role cannot search ${type}.` });

  const defined = definedSearchParams(type);
  const linking = new Set([
    ...(LINKING_PARAMS.get(type) ?? []),
    ...(defined.has('patient') ? ['patient'] : []),
  ]);
  const compartmentParams = new Set(COMPARTMENT_PARAMS.get(type) ?? []);
  const narrowed = new URLSearchParams();
  let wanted: Set<string> | undefined;
  const namedPatients = new Set<string>();

  for (const [name, value] of query) {
    checkName(type, name, defined);
    const [base, modifier] = splitName(name);
    if (base === '_include' || base === '_revinclude') checkInclude(name, value);
    const isLinking = linking.has(base) || (type === 'Patient' && base === '_id');
    // the narrowing replaces a linking parameter's value with the scope: `subject:not=Patient/A`
    // or `_id:missing=false` would come back as exactly the patients the client left out
    if (isLinking && modifier !== undefined && !/^[A-Z][A-Za-z]+$/.test(modifier))
      throw refuse(name, `the :${modifier} modifier is not allowed on a parameter that names patients`);
    // a summary may leave out what the response check reads (HAPI's Patient summary has no
    // generalPractitioner): every entry would be dropped as unprovable, silently
    if (base === '_summary' && value !== 'count' && value !== 'false')
      throw refuse(
        name,
        'only count or false: a summary may leave out what the check of each entry reads; use _elements',
      );
    // `subject:Device=a` asks for subjects of another type (FHIR search.html#modifiers): no patient's records
    if (isLinking && modifier !== undefined && modifier !== 'Patient') return EMPTY;
    const named = patientsNamed(value, isLinking);
    // a value naming a patient outside the scope gets an empty answer, never their data
    const outside = named.ids.filter((id) => !couldBeInScope(id, scope));
    if (outside.length > 0) return { kind: 'empty', outside };
    if (named.other && isLinking) return EMPTY;
    if (compartmentParams.has(base) && !isLinking && FHIR_ID_PATTERN.test(value)) {
      throw refuse(name, 'use Type/id for this reference');
    }
    if (isLinking) {
      // several linking values narrow (AND): keep only the patients named every time
      const ids = new Set(named.ids);
      wanted = wanted ? new Set([...wanted].filter((id) => ids.has(id))) : ids;
      for (const id of ids) namedPatients.add(id);
      continue;
    }
    // `_elements` must keep what the response check reads, or every entry would be dropped as unprovable
    narrowed.append(name, base === '_elements' ? withCheckedElements(type, value, scope) : value);
  }

  const named = [...namedPatients];
  if (scope.directory.has(type)) return { kind: 'search', params: narrowed, named };
  if (scope.kind === 'none' || wanted?.size === 0) return EMPTY;
  // the compartment's own linking parameter (e.g. Observation.subject) — cheaper for servers than `patient`
  const param = type === 'Patient' ? '_id' : (LINKING_PARAMS.get(type)?.[0] ?? [...linking][0]);
  if (!param) throw new AppError('forbidden', { detail: `Your role cannot search ${type}.` });
  const references = (ids: Iterable<string>) =>
    [...ids].map((id) => (type === 'Patient' ? id : `Patient/${id}`)).join(',');

  if (scope.kind === 'patient') {
    narrowed.set(param, references([scope.patientId]));
    return { kind: 'search', params: narrowed, named };
  }
  if (wanted) narrowed.set(param, references(wanted));
  const practitioner = `Practitioner/${scope.practitionerId}`;
  narrowed.append(type === 'Patient' ? GENERAL_PRACTITIONER_PARAM : panelChain(param), practitioner);
  return { kind: 'search', params: narrowed, named };
}

/** The top-level elements the response check reads for a type: the linking ones, a Patient's generalPractitioner. */
function checkedElements(type: string, scope: Scope): string[] {
  if (scope.directory.has(type)) return [];
  if (type === 'Patient') return scope.kind === 'panel' ? ['generalPractitioner'] : [];
  return (LINKING_PARAMS.get(type) ?? []).flatMap((param) =>
    (searchExpressionFor(type, param) ?? '')
      .split(' | ')
      .flatMap((part) => /^\(?[A-Z][A-Za-z]+\.([a-z][A-Za-z]*)/.exec(part)?.[1] ?? []),
  );
}

function withCheckedElements(type: string, value: string, scope: Scope): string {
  const asked = value
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean);
  return [...new Set([...asked, ...checkedElements(type, scope)])].join(',');
}

/** Whether a named patient may be in the scope: decided here for a patient, by the server for a panel. */
function couldBeInScope(patientId: string, scope: Scope): boolean {
  if (scope.kind === 'patient') return patientId === scope.patientId;
  return scope.kind === 'panel' || scope.kind === 'all';
}

/** What the role may never do (an admin may) is 403, so a client does not retry it mended. */
function forbidden(detail: string): AppError {
  return new AppError('forbidden', { detail });
}

/**
 * What a patient's or practitioner's request through the passthrough may be, from its method,
 * path and conditions alone (an admin's: adminWrites.ts). Reads, vreads, instance history and
 * type searches for every scoped role; a practitioner also creates (POST on the type) and updates
 * (PUT on the id), without conditions. Returns the type the request names. What is read or
 * written is then checked against the scope (scopedFhir.ts).
 */
export function assertScopedInteraction(
  method: string,
  target: FhirTarget,
  scope: Scope['kind'],
  conditions: { readonly query: URLSearchParams; readonly ifNoneExist?: string | undefined },
): string {
  if (target.operation) throw forbidden(`The operation ${target.operation} is not allowed for your role.`);
  // `Patient/{id}/{type}` (fhir-kit-client's compartmentSearch): searched as the type by its linking
  // parameter (compartmentSearchQuery), so the same narrowing and response check judge it
  if (target.compartmentType) {
    if (
      method !== 'GET' ||
      target.type !== 'Patient' ||
      !target.id ||
      !LINKING_PARAMS.has(target.compartmentType)
    )
      throw new AppError('validation_failed', {
        detail:
          'Only a search of a clinical type in a Patient compartment is supported; search the type instead.',
      });
    return target.compartmentType;
  }
  if (!target.type)
    throw forbidden('System-level search, history, batch and transaction are not allowed for your role.');
  if (target.history && !target.id) throw forbidden('Type-level history is not allowed for your role.');
  if (method === 'GET') return target.type;
  if (scope !== 'panel' || (method !== 'POST' && method !== 'PUT') || target.history)
    throw forbidden('Your role cannot change FHIR data here.');
  // conditional headers and query parameters run a search upstream outside our checks (an oracle on other patients' data)
  if (conditions.ifNoneExist || conditions.query.size > 0)
    throw forbidden('Conditional create and query parameters on writes are not available for your role.');
  if ((method === 'PUT') !== (target.id !== undefined))
    throw forbidden('Create with POST on the type, update with PUT on the id.');
  return target.type;
}

/**
 * What an instance history is asked upstream with. Admins: whatever the server offers. Scoped
 * roles: `_count` alone (`_format` meaning JSON and `_pretty` are ignored): `_since`, `_at` and
 * the rest are not offered by every upstream (the embedded engine ignores them), and a parameter
 * silently ignored would show the wrong versions.
 */
export function historyParams(query: URLSearchParams, scope: Scope): URLSearchParams {
  if (scope.kind === 'all') return new URLSearchParams(query);
  const params = new URLSearchParams();
  for (const [name, value] of query) {
    if (name === '_count' && /^\d{1,4}$/.test(value) && !params.has('_count')) params.set(name, value);
    else if (name === '_pretty' || (name === '_format' && isJsonFormat(value))) continue;
    else if (name === '_count') throw refuse(name, 'must be a whole number from 0 to 9999, given once');
    else throw refuse(name, 'is not supported on a history for your role (only _count is)');
  }
  return params;
}

/** What client libraries add to a next link they follow (Medplum adds `_count`): harmless, so ignored. */
const CURSOR_COMPANIONS: ReadonlySet<string> = new Set(['_cursor', '_count', '_format', '_pretty']);

/** A paging request carries its cursor and at most those companions; `_format` must still mean JSON. */
export function cursorCompanions(query: URLSearchParams): void {
  for (const [name, value] of query) {
    const fine = CURSOR_COMPANIONS.has(name) && (name !== '_format' || isJsonFormat(value));
    if (!fine || (name === '_cursor' && query.getAll('_cursor').length > 1))
      throw new AppError('validation_failed', {
        errors: [
          { path: name, message: 'cannot be combined with _cursor (the cursor already holds the search)' },
        ],
      });
  }
}

/**
 * The type search a scoped role's Patient compartment search is read as: the query and the
 * patient named by the type's linking parameter (`Patient/A/Observation` is `Observation?subject=Patient/A`).
 * Only the linking parameters our policy follows (compartment.ts): a patient who only performed
 * an Observation is not what it is about, in a compartment search as in any other.
 */
export function compartmentSearchQuery(
  type: string,
  patientId: string,
  query: URLSearchParams,
): URLSearchParams {
  const param = LINKING_PARAMS.get(type)?.[0];
  if (!param) throw new Error(`no linking parameter for ${type}`);
  const asked = new URLSearchParams(query);
  asked.append(param, `Patient/${patientId}`);
  return asked;
}
