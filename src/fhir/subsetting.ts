import { tryGetDataType } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { AppError } from '../errors.js';

/**
 * `_elements` and `_summary` on a read by id of a scoped role (R4 search.html#elements and
 * #summary), applied by the gateway to the resource its check has just passed: sent upstream,
 * they could leave out the very elements that check reads (whose patient it is), and the read
 * would answer 404. Admins' reads go upstream as asked.
 */

export type Subset =
  | { readonly kind: 'elements'; readonly names: ReadonlySet<string> }
  | { readonly kind: 'summary'; readonly mode: 'true' | 'text' | 'data' };

/** R4 search.html#summary: what a subsetted resource is tagged with. */
const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' };

/** Kept in every subset: without them the resource is not a resource. */
const ALWAYS_KEPT: ReadonlySet<string> = new Set(['resourceType', 'id', 'meta']);

const ELEMENT_NAME = /^[a-z][A-Za-z0-9]*$/;

function refuse(name: string, message: string): AppError {
  return new AppError('validation_failed', { errors: [{ path: name, message }] });
}

/** The subset a read of `type` asks for, or undefined for the whole resource; a value we cannot honour is 400. */
export function readSubset(type: string, query: URLSearchParams): Subset | undefined {
  const summaries = query.getAll('_summary');
  const elements = query.getAll('_elements');
  if (summaries.length > 1) throw refuse('_summary', 'must be given once');
  if (elements.length > 1) throw refuse('_elements', 'must be given once (a comma-separated list)');
  if (summaries.length > 0 && elements.length > 0)
    throw refuse('_elements', 'cannot be combined with _summary');
  const summary = summaries[0];
  if (summary !== undefined) {
    if (summary === 'false') return undefined;
    if (summary === 'true' || summary === 'text' || summary === 'data')
      return { kind: 'summary', mode: summary };
    throw refuse('_summary', 'must be true, text, data or false on a read (count is for searches)');
  }
  const list = elements[0];
  if (list === undefined) return undefined;
  // `Observation.code` (R5's form) is taken as `code`
  const names = list.split(',').map((name) => name.trim().replace(new RegExp(`^${type}\\.`), ''));
  if (names.some((name) => !ELEMENT_NAME.test(name)))
    throw refuse('_elements', 'must be a comma-separated list of element names, such as code,status');
  return { kind: 'elements', names: new Set(names) };
}

/** The element a JSON key holds: `valueQuantity` is `value` (a choice, `value[x]`), `_birthDate` is `birthDate`. */
function elementOf(key: string, choices: readonly string[]): string {
  const name = key.startsWith('_') ? key.slice(1) : key;
  const choice = choices.find((base) => name.length > base.length && name.startsWith(base));
  return choice !== undefined && /^[A-Z]/.test(name.slice(choice.length)) ? choice : name;
}

/** The resource cut to `subset` and tagged SUBSETTED; text, data and true keep the mandatory elements too. */
export function subsetOf<T extends Resource>(resource: T, subset: Subset): T {
  const schema = tryGetDataType(resource.resourceType);
  const choices = Object.keys(schema?.elements ?? {})
    .filter((name) => name.endsWith('[x]'))
    .map((name) => name.slice(0, -3));
  const mandatory = schema?.mandatoryProperties ?? new Set<string>();
  const wanted = (element: string): boolean => {
    if (ALWAYS_KEPT.has(element)) return true;
    if (subset.kind === 'elements') return subset.names.has(element) || mandatory.has(element);
    if (subset.mode === 'data') return element !== 'text';
    if (subset.mode === 'text') return element === 'text' || mandatory.has(element);
    return schema?.summaryProperties?.has(element) === true || mandatory.has(element);
  };
  const kept: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(resource)) {
    if (wanted(elementOf(key, choices))) kept[key] = value;
  }
  const meta = resource.meta ?? {};
  // a tag list that is not a list (the server's odd answer) is left out, not spread (a TypeError, a 500)
  const tags = Array.isArray(meta.tag) ? meta.tag : [];
  kept.meta = { ...meta, tag: [...tags, SUBSETTED] };
  return kept as T;
}
