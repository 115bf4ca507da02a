import type { Filter, IncludeTarget, SearchRequest } from '@medplum/core';
import {
  badRequest,
  evalFhirPath,
  formatSearchQuery,
  getReferenceString,
  getSearchParameter,
  getSearchParameters,
  isReference,
  isResourceType,
  OperationOutcomeError,
  Operator,
  splitSearchOnComma,
} from '@medplum/core';
import type {
  Bundle,
  BundleEntry,
  BundleLink,
  Resource,
  ResourceType,
  SearchParameter,
} from '@medplum/fhirtypes';

// What Medplum's MemoryRepository lacks for search, added around it: paging links, _include and
// _revinclude, bare-id reference search, one-link chained search, and a 400 for every search it
// would silently get wrong.
// See https://hl7.org/fhir/R4/search.html

const DEFAULT_PAGE_SIZE = 20;
const MAX_PAGE_SIZE = 1000;

/** Rounds of `:iterate` includes, and resources included in total, before we stop following references. */
const MAX_INCLUDE_ROUNDS = 4;
const MAX_INCLUDED_RESOURCES = 1000;

/**
 * Modifiers and prefixes (as Medplum's parser turns them into operators) that MemoryRepository
 * matches correctly, per search parameter type. number, quantity, composite and special
 * parameters are not matched at all there (every resource fails), so they are absent.
 */
const SUPPORTED_OPERATORS: Readonly<Record<string, readonly string[]>> = {
  reference: [Operator.EQUALS, Operator.NOT, Operator.MISSING, Operator.PRESENT],
  token: [Operator.EQUALS, Operator.NOT, Operator.MISSING, Operator.PRESENT],
  string: [Operator.EQUALS, Operator.CONTAINS, Operator.MISSING, Operator.PRESENT],
  uri: [Operator.EQUALS, Operator.MISSING, Operator.PRESENT],
  date: [
    Operator.EQUALS,
    Operator.NOT_EQUALS,
    Operator.GREATER_THAN,
    Operator.LESS_THAN,
    Operator.GREATER_THAN_OR_EQUALS,
    Operator.LESS_THAN_OR_EQUALS,
    Operator.STARTS_AFTER,
    Operator.ENDS_BEFORE,
    Operator.APPROXIMATELY,
    Operator.MISSING,
    Operator.PRESENT,
  ],
};

/** Medplum-only parameters that @medplum/core adds to every type; not R4, so not offered. */
const NON_R4_PARAMETERS = new Set(['_compartment']);

const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const RELATIVE_REFERENCE = /^[A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/;

/** A search with its page window resolved: what the bundle and its links describe. */
export type PagedSearchRequest = SearchRequest & { readonly offset: number; readonly count: number };

/** The store primitives that include resolution needs; unpaged, unvalidated access. */
export interface IncludeSource {
  readResource(reference: string): Promise<Resource | undefined>;
  searchAll(request: SearchRequest): Promise<Resource[]>;
}

/** The search parameters of a type that this server matches correctly (the ones its CapabilityStatement lists). */
export function supportedSearchParameters(resourceType: string): SearchParameter[] {
  return Object.values(getSearchParameters(resourceType) ?? {}).filter(
    (param) => !NON_R4_PARAMETERS.has(param.code ?? '') && param.type in SUPPORTED_OPERATORS,
  );
}

/**
 * Rejects with 400 every part of a search that MemoryRepository would silently answer wrongly
 * (typically with zero results): chained parameters, `_has`, unknown parameters, unsupported
 * parameter types and modifiers, unknown sort and include parameters.
 */
export function assertSupportedSearch(request: SearchRequest): void {
  const { resourceType } = request;
  if (!isResourceType(resourceType)) {
    throw invalidSearch(`Unknown resource type: ${resourceType}`);
  }
  for (const filter of request.filters ?? []) {
    assertSupportedFilter(resourceType, filter);
  }
  for (const rule of request.sortRules ?? []) {
    findKnownParameter(resourceType, rule.code);
  }
  for (const target of [...(request.include ?? []), ...(request.revInclude ?? [])]) {
    assertIncludeTarget(target);
  }
  if (request.cursor !== undefined) {
    throw invalidSearch('_cursor is not supported; page with _offset and _count');
  }
}

/** One link of a chained parameter: `subject:Patient.general-practitioner` -> subject, Patient, general-practitioner. */
export interface Chain {
  readonly link: string;
  readonly targetType: string;
  readonly param: string;
}

/**
 * Parses a chained parameter of one link (https://hl7.org/fhir/R4/search.html#chaining). The
 * target type may be left out only when the reference parameter has one target type; longer
 * chains and ambiguous ones answer 400, as the specification asks servers to do.
 */
export function parseChain(resourceType: string, code: string): Chain | undefined {
  const dot = code.indexOf('.');
  if (dot < 0) return undefined;
  const [link = '', modifier] = code.slice(0, dot).split(':', 2);
  const param = code.slice(dot + 1);
  if (param.includes('.') || param.includes(':')) {
    throw invalidSearch(`Chains of more than one link, or with modifiers, are not supported: ${code}`);
  }
  const reference = findKnownParameter(resourceType, link);
  const targets = reference.target ?? [];
  const targetType = modifier ?? (targets.length === 1 ? targets[0] : undefined);
  if (reference.type !== 'reference' || !targetType || !targets.includes(targetType as ResourceType)) {
    throw invalidSearch(`Chained search needs a reference parameter and its target type: ${code}`);
  }
  return { link, targetType, param };
}

function assertSupportedFilter(resourceType: string, filter: Filter): void {
  if (filter.code.startsWith('_has')) {
    throw invalidSearch('Reverse chaining (_has) is not supported by this server');
  }
  const chain = parseChain(resourceType, filter.code);
  if (chain) {
    assertSupportedFilter(chain.targetType, { ...filter, code: chain.param });
    return;
  }
  const param = findKnownParameter(resourceType, filter.code);
  const operators = SUPPORTED_OPERATORS[param.type];
  if (!operators) {
    throw invalidSearch(
      `Search parameters of type ${param.type} are not supported by this server: ${filter.code}`,
    );
  }
  if (!operators.includes(filter.operator)) {
    throw invalidSearch(
      `Modifier or prefix "${filter.operator}" is not supported on ${param.type} parameter ${filter.code}`,
    );
  }
}

function assertIncludeTarget(target: IncludeTarget): void {
  const param = findKnownParameter(target.resourceType, target.searchParam);
  if (param.type !== 'reference') {
    throw invalidSearch(`${target.resourceType}:${target.searchParam} is not a reference parameter`);
  }
  if (target.targetType && !isResourceType(target.targetType)) {
    throw invalidSearch(`Unknown resource type: ${target.targetType}`);
  }
}

function findKnownParameter(resourceType: string, code: string): SearchParameter {
  const param = NON_R4_PARAMETERS.has(code) ? undefined : getSearchParameter(resourceType, code);
  if (!param) {
    throw invalidSearch(`Unknown search parameter "${code}" for ${resourceType}`);
  }
  return param;
}

/** Applies the default page size, caps `_count` at the maximum and rejects nonsense values. */
export function resolvePageWindow(request: SearchRequest): PagedSearchRequest {
  const count = request.count ?? DEFAULT_PAGE_SIZE;
  const offset = request.offset ?? 0;
  if (!Number.isInteger(count) || count < 0) {
    throw invalidSearch('_count must be a non-negative integer');
  }
  if (!Number.isInteger(offset) || offset < 0) {
    throw invalidSearch('_offset must be a non-negative integer');
  }
  return { ...request, count: Math.min(count, MAX_PAGE_SIZE), offset };
}

/**
 * A bare id on a reference parameter (`subject=123`) means every target type
 * (`subject=Patient/123,Group/123,...`): what Medplum's matcher and the reference index compare.
 */
export function expandBareReferenceIds(resourceType: string, filter: Filter): Filter {
  const param = getSearchParameter(resourceType, filter.code);
  const isReferenceEquality = filter.operator === Operator.EQUALS || filter.operator === Operator.NOT;
  if (param?.type !== 'reference' || !isReferenceEquality || !param.target?.length) {
    return filter;
  }
  const targets = param.target;
  const values = splitSearchOnComma(filter.value).flatMap((value) =>
    FHIR_ID.test(value) ? targets.map((type) => `${type}/${value}`) : [escapeSearchValue(value)],
  );
  return { ...filter, value: values.join(',') };
}

function escapeSearchValue(value: string): string {
  return value.replace(/[\\,]/g, (char) => `\\${char}`);
}

/**
 * Finds the resources named by `_include` and `_revinclude`, following `:iterate` targets through
 * the resources included so far. Matches themselves are never repeated as includes.
 * @see https://hl7.org/fhir/R4/search.html#include
 */
export async function findIncludedResources(
  request: SearchRequest,
  matches: readonly Resource[],
  source: IncludeSource,
): Promise<Resource[]> {
  const seen = new Set(matches.map(referenceOf));
  const included: Resource[] = [];
  let frontier: readonly Resource[] = matches;
  for (let round = 0; round < MAX_INCLUDE_ROUNDS && frontier.length > 0; round++) {
    // Plain targets apply to the matches only; `:iterate` ones also to what was included.
    const applies = (target: IncludeTarget) => round === 0 || target.modifier === Operator.ITERATE;
    const found = [
      ...(await followReferences((request.include ?? []).filter(applies), frontier, source)),
      ...(await findReferrers((request.revInclude ?? []).filter(applies), frontier, source)),
    ];
    const fresh = found.filter((resource) => markNew(seen, referenceOf(resource)));
    included.push(...fresh.slice(0, MAX_INCLUDED_RESOURCES - included.length));
    frontier = fresh;
    if (included.length >= MAX_INCLUDED_RESOURCES) {
      break;
    }
  }
  return included;
}

async function followReferences(
  targets: readonly IncludeTarget[],
  resources: readonly Resource[],
  source: IncludeSource,
): Promise<Resource[]> {
  const references = new Set<string>();
  for (const target of targets) {
    const param = getSearchParameter(target.resourceType, target.searchParam);
    for (const resource of resources) {
      if (param?.expression && resource.resourceType === target.resourceType) {
        for (const reference of referencesIn(param.expression, resource, target.targetType)) {
          references.add(reference);
        }
      }
    }
  }
  const read = await Promise.all([...references].map((reference) => source.readResource(reference)));
  return read.filter((resource): resource is Resource => resource !== undefined);
}

function referencesIn(expression: string, resource: Resource, targetType: string | undefined): string[] {
  const references: string[] = [];
  for (const value of evalFhirPath(expression, resource)) {
    // Contained (#x) and absolute references are not resources of this server to read.
    if (isReference(value) && RELATIVE_REFERENCE.test(value.reference)) {
      if (!targetType || value.reference.startsWith(`${targetType}/`)) {
        references.push(value.reference);
      }
    }
  }
  return references;
}

async function findReferrers(
  targets: readonly IncludeTarget[],
  resources: readonly Resource[],
  source: IncludeSource,
): Promise<Resource[]> {
  const found: Resource[] = [];
  for (const target of targets) {
    const referenced = resources
      .filter((resource) => !target.targetType || resource.resourceType === target.targetType)
      .map(referenceOf);
    if (referenced.length > 0) {
      const filter = { code: target.searchParam, operator: Operator.EQUALS, value: referenced.join(',') };
      // assertSupportedSearch has checked that the target's type has this parameter, so it is a resource type.
      const request = { resourceType: target.resourceType as ResourceType, filters: [filter] };
      found.push(...(await source.searchAll(request)));
    }
  }
  return found;
}

/**
 * Assembles a searchset Bundle: matches, then includes, with absolute fullUrls and paging links.
 * `total` (matches only) is always present, whatever `_total` asks: in memory it is exact and free.
 */
export function buildSearchBundle(
  baseUrl: string,
  request: PagedSearchRequest,
  total: number,
  matches: readonly Resource[],
  included: readonly Resource[],
): Bundle {
  const entry = [
    ...matches.map((resource) => searchEntry(baseUrl, resource, 'match')),
    ...included.map((resource) => searchEntry(baseUrl, resource, 'include')),
  ];
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    total,
    link: pagingLinks(baseUrl, request, total),
    ...(entry.length > 0 ? { entry } : {}),
  };
}

function searchEntry(baseUrl: string, resource: Resource, mode: 'match' | 'include'): BundleEntry {
  return { fullUrl: `${baseUrl}/${referenceOf(resource)}`, resource, search: { mode } };
}

/** `self`, plus `next` and `previous` where there are such pages, as absolute URLs on this server. */
function pagingLinks(baseUrl: string, request: PagedSearchRequest, total: number): BundleLink[] {
  const { offset, count } = request;
  // Medplum writes `_elements` as its own `_fields`: links carry the R4 name back
  const pageUrl = (pageOffset: number) =>
    `${baseUrl}/${request.resourceType}${formatSearchQuery({ ...request, offset: pageOffset })}`.replace(
      /([?&])_fields=/,
      '$1_elements=',
    );
  const links: BundleLink[] = [{ relation: 'self', url: pageUrl(offset) }];
  if (count > 0 && offset + count < total) {
    links.push({ relation: 'next', url: pageUrl(offset + count) });
  }
  if (offset > 0) {
    links.push({ relation: 'previous', url: pageUrl(Math.max(0, offset - count)) });
  }
  return links;
}

function referenceOf(resource: Resource): string {
  return getReferenceString(resource) ?? `${resource.resourceType}/${resource.id}`;
}

function markNew(seen: Set<string>, key: string): boolean {
  if (seen.has(key)) {
    return false;
  }
  seen.add(key);
  return true;
}

function invalidSearch(message: string): OperationOutcomeError {
  return new OperationOutcomeError(badRequest(message));
}
