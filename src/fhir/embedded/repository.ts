import type { Filter, SearchRequest, WithId } from '@medplum/core';
import {
  badRequest,
  evalFhirPath,
  getSearchParameter,
  gone,
  isNotFound,
  isResourceType,
  matchesSearchRequest,
  normalizeOperationOutcome,
  notFound,
  OperationOutcomeError,
  Operator,
  preconditionFailed,
  splitSearchOnComma,
  validateResource,
} from '@medplum/core';
import type { CreateResourceOptions, ReadHistoryOptions, UpdateResourceOptions } from '@medplum/fhir-router';
import { MemoryRepository } from '@medplum/fhir-router';
import type {
  Bundle,
  BundleEntry,
  BundleLink,
  OperationOutcomeIssue,
  Resource,
  ResourceType,
} from '@medplum/fhirtypes';
import { searchExpressionFor } from '../definitions.js';
import { jsonPatchRenames } from '../jsonPatch.js';
import { impossibleDates } from './calendarDates.js';
import { outOfRangeIntegers } from './integerRanges.js';
import type { JournalEntry, JournalOp, ResourceJournal } from './journal.js';
import { ReferenceIndex } from './referenceIndex.js';
import {
  assertSupportedSearch,
  buildSearchBundle,
  expandBareReferenceIds,
  findIncludedResources,
  parseChain,
  resolvePageWindow,
} from './search.js';

/** Recent searches whose matches are kept until a type they read is written. */
const MATCH_CACHE_ENTRIES = 64;

/** How the server names resources: UUIDs (Medplum's habit) or sequential numbers (HAPI FHIR's). */
export type IdStyle = 'uuid' | 'numeric';

/**
 * Medplum's MemoryRepository made to behave like a real FHIR server: every write is validated
 * against R4 and journaled to SQLite (and rebuilt from it at start), history and vread come from
 * the journal, deleted resources answer 410, transaction Bundles are atomic, and search gets
 * paging links, _include/_revinclude and honest 400s (see search.ts).
 *
 * Requests must reach it one at a time (server.ts serialises them): a transaction's rollback
 * rebuilds memory from the journal, which would also undo another request's concurrent writes.
 */
export class JournaledMemoryRepository extends MemoryRepository {
  private readonly journal: ResourceJournal;
  private readonly baseUrl: string;
  private readonly references = new ReferenceIndex();
  /** Writes per resource type, and the matches of recent searches stamped with the counts they saw. */
  private readonly writes = new Map<string, number>();
  private readonly matches = new Map<string, { stamp: string; resources: Resource[] }>();
  private transactionDepth = 0;
  private writesInTransaction = 0;

  private lastNumericId = 0;

  private constructor(
    journal: ResourceJournal,
    baseUrl: string,
    private readonly idStyle: IdStyle,
  ) {
    super();
    this.journal = journal;
    this.baseUrl = baseUrl;
  }

  /** Builds the repository with every resource the journal holds, at its newest version. */
  static async restore(
    journal: ResourceJournal,
    baseUrl: string,
    idStyle: IdStyle = 'uuid',
  ): Promise<JournaledMemoryRepository> {
    const repo = new JournaledMemoryRepository(journal, baseUrl, idStyle);
    repo.lastNumericId = journal.maxNumericId();
    await repo.reloadFromJournal();
    return repo;
  }

  /** Resource ids: UUIDs, or 1, 2, 3 ... as HAPI FHIR assigns them (never reused). */
  override generateId(): string {
    return this.idStyle === 'numeric' ? String(++this.lastNumericId) : super.generateId();
  }

  /** Version ids: UUIDs, or 1, 2, 3 ... per resource as HAPI FHIR counts them (a delete is a version too). */
  private nextVersionId(resourceType: string, id: string): string {
    return this.idStyle === 'numeric'
      ? String(this.journal.countVersions(resourceType, id) + 1)
      : super.generateId();
  }

  /** @see https://hl7.org/fhir/R4/http.html#create — the server assigns id, versionId and lastUpdated. */
  override async createResource<T extends Resource>(
    resource: T,
    options?: CreateResourceOptions,
  ): Promise<WithId<T>> {
    const incoming = withoutServerMeta(resource);
    // Batch processing pre-assigns ids (to resolve urn:uuid references) and says so with assignedId.
    if (!options?.assignedId) {
      delete incoming.id;
    }
    assertValidResource(incoming);
    return this.storeVersion('create', incoming);
  }

  /** @see https://hl7.org/fhir/R4/http.html#update — also update-as-create for an unknown id. */
  override async updateResource<T extends Resource>(
    resource: T,
    options?: UpdateResourceOptions,
  ): Promise<WithId<T>> {
    if (!resource.id) {
      throw new OperationOutcomeError(badRequest('Missing id'));
    }
    const existing = await this.findCurrent(resource.resourceType, resource.id);
    if (options?.ifMatch !== undefined) {
      assertVersionMatches(existing, options.ifMatch);
    }
    const incoming = withoutServerMeta(resource);
    assertValidResource(incoming);
    return this.storeVersion(existing ? 'update' : 'create', incoming);
  }

  /** @see https://hl7.org/fhir/R4/http.html#patch — a patch changes the record it names, never makes another. */
  override async patchResource<T extends Resource>(
    resourceType: T['resourceType'],
    id: string,
    patch: Parameters<MemoryRepository['patchResource']>[2],
  ): Promise<WithId<T>> {
    // the patched copy was stored under whatever id it ended with: a patch of /id made another record
    if (jsonPatchRenames(patch))
      throw new OperationOutcomeError(badRequest('A patch cannot change the id or resourceType'));
    return super.patchResource<T>(resourceType, id, patch);
  }

  /** @see https://hl7.org/fhir/R4/http.html#delete — deleting a deleted resource succeeds and changes nothing. */
  override async deleteResource(resourceType: string, id: string): Promise<void> {
    if (this.isDeleted(resourceType, id)) {
      return;
    }
    await super.deleteResource(resourceType, id);
    this.references.remove(resourceType, id);
    this.written(resourceType);
    // A delete is a version of its own in FHIR history, with its own version id.
    this.record({
      op: 'delete',
      resourceType,
      id,
      versionId: this.nextVersionId(resourceType, id),
      lastUpdated: new Date().toISOString(),
    });
  }

  /** Answers 410 Gone rather than 404 for a resource that existed and was deleted. */
  override async readResource<T extends Resource>(resourceType: string, id: string): Promise<T> {
    try {
      return await super.readResource<T>(resourceType, id);
    } catch (err) {
      if (isNotFoundError(err) && this.isDeleted(resourceType, id)) {
        throw new OperationOutcomeError(gone);
      }
      throw err;
    }
  }

  /** @see https://hl7.org/fhir/R4/http.html#history — newest first, deletes included. */
  override async readHistory<T extends Resource>(
    resourceType: string,
    id: string,
    options?: ReadHistoryOptions,
  ): Promise<Bundle<T>> {
    const total = this.journal.countVersions(resourceType, id);
    if (total === 0) {
      throw new OperationOutcomeError(notFound);
    }
    const page = historyPage(options);
    const entries = this.journal.history(resourceType, id, page);
    const at = `${this.baseUrl}/${resourceType}/${id}/_history`;
    return {
      resourceType: 'Bundle',
      type: 'history',
      total,
      link: historyLinks(at, page, total),
      entry: entries.map((entry) => historyEntry(this.baseUrl, entry) as BundleEntry<T>),
    };
  }

  override async readVersion<T extends Resource>(
    resourceType: string,
    id: string,
    versionId: string,
  ): Promise<T> {
    const entry = this.journal.version(resourceType, id, versionId);
    if (!entry) {
      throw new OperationOutcomeError(notFound);
    }
    if (!entry.resource) {
      throw new OperationOutcomeError(gone);
    }
    return entry.resource as T;
  }

  override async search<T extends Resource>(searchRequest: SearchRequest<T>): Promise<Bundle<WithId<T>>> {
    assertSupportedSearch(searchRequest);
    const request = resolvePageWindow(searchRequest);
    const all = this.sorted(request, this.matching(request));
    const matches = all.slice(request.offset, request.offset + request.count).map((r) => structuredClone(r));
    const included = await findIncludedResources(request, matches, {
      readResource: (reference) => this.readIfPresent(reference),
      searchAll: async (unpaged) => this.matching(unpaged).map((r) => structuredClone(r)),
    });
    return buildSearchBundle(this.baseUrl, request, all.length, matches, included) as Bundle<WithId<T>>;
  }

  /**
   * Every stored resource the search's filters match, uncopied. Reference, `_id` and chained
   * filters are answered from the reference index; only the rest is evaluated (FHIRPath) on the
   * resources those leave, so a search's cost follows its answer, not the store's size.
   */
  private matching(request: SearchRequest): Resource[] {
    // the same search again (a page after a page, a practitioner's narrowing on every request) reuses the
    // matches until a resource of a type it reads is written: exact, like a query cache invalidated by writes
    const key = `${request.resourceType}?${JSON.stringify(request.filters ?? [])}`;
    const types = [
      request.resourceType,
      ...(request.filters ?? []).flatMap((f) => this.chainTarget(request.resourceType, f)),
    ];
    const stamp = types.map((type) => `${type}:${this.writes.get(type) ?? 0}`).join(',');
    const cached = this.matches.get(key);
    if (cached?.stamp === stamp) return cached.resources;
    const resources = this.evaluate(request);
    this.matches.delete(key);
    this.matches.set(key, { stamp, resources });
    if (this.matches.size > MATCH_CACHE_ENTRIES)
      this.matches.delete(this.matches.keys().next().value as string);
    return resources;
  }

  private chainTarget(resourceType: string, filter: Filter): string[] {
    const chain = parseChain(resourceType, filter.code);
    return chain ? [chain.targetType] : [];
  }

  /** Records a write to a type: searches that read it are evaluated afresh. */
  private written(resourceType: string): void {
    this.writes.set(resourceType, (this.writes.get(resourceType) ?? 0) + 1);
  }

  private evaluate(request: SearchRequest): Resource[] {
    const { resourceType } = request;
    const stored = this.storedOf(resourceType);
    let candidates: Set<string> | undefined;
    const rest: Filter[] = [];
    for (const filter of request.filters ?? []) {
      const ids = this.indexedIds(resourceType, filter);
      if (ids === undefined) rest.push(expandBareReferenceIds(resourceType, filter));
      else candidates = candidates ? intersect(candidates, ids) : ids;
    }
    const pool = candidates ? [...candidates].flatMap((id) => stored.get(id) ?? []) : [...stored.values()];
    if (rest.length === 0) return pool;
    const remaining: SearchRequest = { resourceType, filters: rest };
    return pool.filter((resource) => matchesSearchRequest(resource, remaining));
  }

  /** The ids an equality filter on `_id`, a reference or a chain allows; undefined when the index cannot tell. */
  private indexedIds(resourceType: string, filter: Filter): Set<string> | undefined {
    if (filter.operator !== Operator.EQUALS) return undefined;
    const values = splitSearchOnComma(filter.value);
    if (filter.code === '_id') return new Set(values);
    const chain = parseChain(resourceType, filter.code);
    if (chain) {
      const inner = { code: chain.param, operator: filter.operator, value: filter.value };
      const targets = this.matching({ resourceType: chain.targetType as ResourceType, filters: [inner] });
      return union(
        targets.map((t) => this.references.holding(resourceType, chain.link, `${t.resourceType}/${t.id}`)),
      );
    }
    if (getSearchParameter(resourceType, filter.code)?.type !== 'reference') return undefined;
    const expanded = splitSearchOnComma(expandBareReferenceIds(resourceType, filter).value);
    return union(expanded.map((reference) => this.references.holding(resourceType, filter.code, reference)));
  }

  /**
   * Sorting done here rather than by MemoryRepository, which evaluates FHIRPath inside the
   * comparator (~30 ms for 50 observations): each sort key is computed once per match, then the
   * same ordering (JSON of the parameter's values, localeCompare) is applied, primary rule first.
   */
  private sorted(request: SearchRequest, matches: Resource[]): Resource[] {
    if (!request.sortRules?.length) return matches;
    const rules = request.sortRules.map((rule) => ({
      descending: rule.descending ? -1 : 1,
      expression: searchExpressionFor(request.resourceType, rule.code),
    }));
    const keyed = matches.map((resource) => ({
      resource,
      keys: rules.map((rule) =>
        rule.expression ? JSON.stringify(evalFhirPath(rule.expression, resource)) : '',
      ),
    }));
    keyed.sort((a, b) => {
      for (let i = 0; i < rules.length; i++) {
        const order = (a.keys[i] ?? '').localeCompare(b.keys[i] ?? '') * (rules[i]?.descending ?? 1);
        if (order !== 0) return order;
      }
      return 0;
    });
    return keyed.map((k) => k.resource);
  }

  /** MemoryRepository's own map of current resources (private there; @medplum/fhir-router is pinned at 4.5.2). */
  private storedOf(resourceType: string): ReadonlyMap<string, Resource> {
    const store = (this as unknown as { resources: Map<string, Map<string, Resource>> }).resources;
    return store.get(resourceType) ?? new Map();
  }

  /**
   * Makes the callback atomic: journal writes happen in one SQLite transaction, and on failure
   * the in-memory state is rebuilt from what the journal committed. Nested calls (a conditional
   * create inside a transaction Bundle) join the outer transaction.
   */
  override async withTransaction<TResult>(
    callback: (client: undefined) => Promise<TResult>,
  ): Promise<TResult> {
    if (this.transactionDepth > 0) {
      return callback(undefined);
    }
    this.transactionDepth++;
    this.writesInTransaction = 0;
    this.journal.begin();
    try {
      const result = await callback(undefined);
      this.journal.commit();
      return result;
    } catch (err) {
      this.journal.rollback();
      if (this.writesInTransaction > 0) {
        await this.reloadFromJournal();
      }
      throw err;
    } finally {
      this.transactionDepth--;
    }
  }

  /** True when this version brought the resource into existence, e.g. an update-as-create (which deserves a 201). */
  isCreation(resource: Resource): boolean {
    const { id, meta } = resource;
    return (
      Boolean(id && meta?.versionId) &&
      this.journal.version(resource.resourceType, id ?? '', meta?.versionId ?? '')?.op === 'create'
    );
  }

  private isDeleted(resourceType: string, id: string): boolean {
    return this.journal.latest(resourceType, id)?.op === 'delete';
  }

  private async storeVersion<T extends Resource>(op: JournalOp, resource: T): Promise<WithId<T>> {
    // MemoryRepository.createResource keeps a given id and version and adds lastUpdated (stripped from the input)
    const id = resource.id ?? this.generateId();
    const versioned = {
      ...resource,
      id,
      meta: { ...resource.meta, versionId: this.nextVersionId(resource.resourceType, id) },
    };
    const stored = await super.createResource(versioned);
    this.references.add(stored);
    this.written(stored.resourceType);
    const { versionId, lastUpdated } = stored.meta ?? {};
    if (!versionId || !lastUpdated) {
      throw new Error('MemoryRepository stored a resource without versionId or lastUpdated');
    }
    this.record({
      op,
      resourceType: stored.resourceType,
      id: stored.id,
      versionId,
      lastUpdated,
      resource: stored,
    });
    return stored;
  }

  private record(entry: JournalEntry): void {
    this.journal.append(entry);
    this.writesInTransaction++;
  }

  private async reloadFromJournal(): Promise<void> {
    this.clear();
    this.references.clear();
    this.matches.clear();
    for (const resource of this.journal.currentResources()) {
      // The base class stores a resource with its id and meta as given: the journaled version as it was.
      await super.createResource(resource);
      this.references.add(resource);
    }
  }

  private async findCurrent(resourceType: string, id: string): Promise<Resource | undefined> {
    try {
      return await super.readResource(resourceType, id);
    } catch (err) {
      if (isNotFoundError(err)) {
        return undefined;
      }
      throw err;
    }
  }

  private async readIfPresent(reference: string): Promise<Resource | undefined> {
    const [resourceType = '', id = ''] = reference.split('/');
    return this.findCurrent(resourceType, id);
  }
}

/** Rejects unknown resource types and anything that does not conform to the R4 base definition. */
function assertValidResource(resource: Resource): void {
  if (!isResourceType(resource.resourceType)) {
    throw new OperationOutcomeError(badRequest(`Unknown resource type: ${String(resource.resourceType)}`));
  }
  // Throws an OperationOutcomeError (400) listing every structural or invariant error; returns warnings.
  validateResource(resource);
  const issues = [
    ...impossibleDates(resource).map((path) => valueIssue(path, 'Invalid date: no such day on the calendar')),
    ...outOfRangeIntegers(resource).map((path) =>
      valueIssue(path, 'Invalid integer: outside the 32-bit range'),
    ),
  ];
  if (issues.length > 0) throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
}

function valueIssue(path: string, text: string): OperationOutcomeIssue {
  return { severity: 'error', code: 'value', details: { text }, expression: [path] };
}

function assertVersionMatches(existing: Resource | undefined, expectedVersionId: string): void {
  if (!existing) {
    throw new OperationOutcomeError(notFound);
  }
  if (existing.meta?.versionId !== expectedVersionId) {
    throw new OperationOutcomeError(preconditionFailed);
  }
}

/** A deep copy without the parts of meta that only the server may set. */
function withoutServerMeta<T extends Resource>(resource: T): T {
  const copy = structuredClone(resource);
  if (copy.meta) {
    delete copy.meta.versionId;
    delete copy.meta.lastUpdated;
  }
  return copy;
}

/** A history page as a server should serve one: 20 versions unless `_count` says otherwise, never more than 1,000. */
function historyPage(options: ReadHistoryOptions | undefined): { offset: number; limit: number } {
  const whole = (n: number | undefined) => (n !== undefined && Number.isInteger(n) && n >= 0 ? n : undefined);
  return {
    offset: whole(options?.offset) ?? 0,
    limit: Math.min(whole(options?.limit) ?? HISTORY_PAGE, HISTORY_PAGE_MAX),
  };
}

const HISTORY_PAGE = 20;
const HISTORY_PAGE_MAX = 1000;

function historyLinks(at: string, page: { offset: number; limit: number }, total: number): BundleLink[] {
  const url = (offset: number) => `${at}?_count=${page.limit}&_offset=${offset}`;
  return [
    { relation: 'self', url: url(page.offset) },
    ...(page.limit > 0 && page.offset + page.limit < total
      ? [{ relation: 'next', url: url(page.offset + page.limit) }]
      : []),
    ...(page.offset > 0 ? [{ relation: 'previous', url: url(Math.max(0, page.offset - page.limit)) }] : []),
  ];
}

function historyEntry(baseUrl: string, entry: JournalEntry): BundleEntry {
  const reference = `${entry.resourceType}/${entry.id}`;
  const request = {
    create: { method: 'POST', url: entry.resourceType },
    update: { method: 'PUT', url: reference },
    delete: { method: 'DELETE', url: reference },
  } as const;
  return {
    fullUrl: `${baseUrl}/${reference}`,
    ...(entry.resource ? { resource: entry.resource } : {}),
    request: request[entry.op],
    response: {
      status: entry.op === 'create' ? '201 Created' : '200 OK',
      etag: `W/"${entry.versionId}"`,
      lastModified: entry.lastUpdated,
    },
  };
}

function isNotFoundError(err: unknown): boolean {
  return err instanceof OperationOutcomeError && isNotFound(normalizeOperationOutcome(err));
}

function intersect(a: ReadonlySet<string>, b: ReadonlySet<string>): Set<string> {
  const [small, large] = a.size <= b.size ? [a, b] : [b, a];
  return new Set([...small].filter((id) => large.has(id)));
}

function union(sets: readonly ReadonlySet<string>[]): Set<string> {
  const all = new Set<string>();
  for (const set of sets) for (const id of set) all.add(id);
  return all;
}
