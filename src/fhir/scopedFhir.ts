import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import { writeAudit } from '../audit/auditService.js';
import { AppError } from '../errors.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import {
  isMember,
  LINKING_PARAMS,
  linkingReferences,
  type Membership,
  membershipOf,
  type Scope,
  strictPatientId,
} from './compartment.js';
import type { ConditionalRead, FhirRequest, FhirResult, Written } from './fhirService.js';
import { type CursorBinding, cursorForLink, verifyCursor } from './links.js';
import { narrowSearch } from './searchPolicy.js';

/**
 * One scoped FHIR access per request, built from the verified caller (DESIGN.md section 9):
 * the only way the passthrough and the slim services reach the FHIR server. It owns the scope,
 * the search narrowing (searchPolicy.ts), the response check of every resource that leaves
 * (compartment.ts, panelMembership.ts), the paging cursors (links.ts) and, through
 * fhirService, the one mapping of upstream statuses. Admins (`all`) pass unchanged but are
 * audited on every write.
 */

export interface PageLink {
  /** `next`, `previous`, `first`, `last` as the upstream named them (`self` is not relayed). */
  readonly relation: string;
  /** A signed cursor for that page, bound to the caller, the route and the resource type. */
  readonly cursor: string;
}

export interface SearchPage<T extends Resource = Resource> {
  /** The upstream Bundle with only the entries the scope allows; `total` removed when any were dropped. */
  readonly bundle: Bundle<T>;
  readonly links: readonly PageLink[];
  /** The `next` cursor, or null on the last page. */
  readonly next: string | null;
}

export interface ScopedFhir {
  readonly caller: Caller;
  readonly scope: Scope;
  /** A resource in scope; anything else (missing, deleted or someone else's) is 404 alike. */
  read<T extends Resource = Resource>(
    type: string,
    id: string,
    conditional?: ConditionalRead,
  ): Promise<FhirResult<T>>;
  vread(type: string, id: string, versionId: string): Promise<FhirResult<Resource>>;
  history(type: string, id: string): Promise<FhirResult<Bundle>>;
  /** A narrowed, checked search; `route` names where its cursors may be used. */
  search<T extends Resource = Resource>(
    type: string,
    query: URLSearchParams,
    route: string,
  ): Promise<SearchPage<T>>;
  /** The page a cursor of `search(type, ..., route)` points to, checked the same way. */
  page<T extends Resource = Resource>(cursor: string, type: string, route: string): Promise<SearchPage<T>>;
  create<T extends Resource>(type: string, resource: T): Promise<Written<T>>;
  update<T extends Resource>(type: string, id: string, resource: T, ifMatch?: string): Promise<Written<T>>;
  /** Admins only: any other interaction (operations, batch, PATCH, DELETE, conditional writes), audited. */
  forward(
    request: FhirRequest,
    target: { type?: string; id?: string; operation?: string },
  ): Promise<FhirResult>;
}

/** The caller's reach, from the verified token only: admin all, patient their own, practitioner their panel. */
export function scopeOf(caller: Caller): Scope {
  if (caller.role === 'admin') return { kind: 'all' };
  if (!caller.fhirId) return { kind: 'none' };
  if (caller.role === 'patient') return { kind: 'patient', patientId: caller.fhirId };
  return { kind: 'panel', practitionerId: caller.fhirId };
}

function emptySearchset<T extends Resource>(): Bundle<T> {
  return { resourceType: 'Bundle', type: 'searchset', total: 0, entry: [] };
}

function invalidCursor(): AppError {
  return new AppError('validation_failed', {
    errors: [{ path: 'cursor', message: 'is not valid here or for you, or has expired' }],
  });
}

const WRITE_ACTIONS: Readonly<Record<string, string>> = {
  POST: 'fhir.create',
  PUT: 'fhir.update',
  PATCH: 'fhir.patch',
  DELETE: 'fhir.delete',
};

export function scopedFhir(deps: AppDeps, caller: Caller, ctx: RequestContext): ScopedFhir {
  const scope = scopeOf(caller);
  const fhir = deps.fhir;

  /** The panel members among the patients these memberships name (one upstream lookup at most). */
  const assignedAmong = async (memberships: readonly Membership[]): Promise<ReadonlySet<string>> => {
    if (scope.kind !== 'panel') return new Set();
    const named = memberships.flatMap((m) => (typeof m === 'object' ? m.anyOf : []));
    return named.length > 0 ? deps.panels.assigned(scope.practitionerId, named) : new Set();
  };

  const learnPatients = (resources: readonly (Resource | undefined)[]) => {
    for (const resource of resources) if (resource?.resourceType === 'Patient') deps.panels.learn(resource);
  };

  const allowed = async (resource: Resource): Promise<boolean> => {
    const membership = membershipOf(resource, scope);
    return isMember(membership, await assignedAmong([membership]));
  };

  /** Defence in depth: every entry, match or include, is tested before it leaves. */
  const checkBundle = async <T extends Resource>(bundle: Bundle<T>): Promise<Bundle<T>> => {
    if (scope.kind === 'all') return bundle;
    const entries = (bundle.entry ?? []).filter(
      (e): e is BundleEntry<T> & { resource: T } =>
        !!e.resource && e.resource.resourceType !== 'OperationOutcome',
    );
    learnPatients(entries.map((e) => e.resource));
    const memberships = entries.map((e) => membershipOf(e.resource, scope));
    const assigned = await assignedAmong(memberships);
    const kept = entries.filter((_, i) => isMember(memberships[i] as Membership, assigned));
    const checked: Bundle<T> = { ...bundle, entry: kept };
    if (kept.length !== (bundle.entry ?? []).length) delete checked.total;
    return checked;
  };

  const binding = (route: string, type: string): CursorBinding => ({
    userId: caller.userId,
    route,
    type,
    now: deps.clock.now(),
  });

  const toPage = async <T extends Resource>(bundle: Bundle<T>, type: string, route: string) => {
    const checked = await checkBundle(bundle);
    const links = (bundle.link ?? []).flatMap((link): PageLink[] => {
      if (!link.url || link.relation === 'self') return [];
      const cursor = cursorForLink(deps.secrets.cursorKey, binding(route, type), link.url, fhir.baseUrl);
      return cursor ? [{ relation: link.relation, cursor }] : [];
    });
    const next = links.find((l) => l.relation === 'next')?.cursor ?? null;
    return { bundle: { ...checked, link: undefined } as Bundle<T>, links, next };
  };

  const audit = async (
    method: string,
    target: { type?: string; id?: string; operation?: string },
    status: number,
  ) => {
    const action = target.operation
      ? 'fhir.operation'
      : !target.type
        ? 'fhir.batch'
        : (WRITE_ACTIONS[method] ?? 'fhir.write');
    await writeAudit(deps.db, deps.clock, {
      action,
      outcome: status < 400 ? 'success' : 'failed',
      actorUserId: caller.userId,
      actorRole: caller.role,
      targetFhirType: target.type ?? null,
      targetFhirId: target.id ?? null,
      requestId: ctx.requestId,
      clientIp: ctx.clientIp,
      detail: { method, status, ...(target.operation ? { operation: target.operation } : {}) },
    });
  };

  /** Runs a write, audits it (also when the upstream refused it), and forgets what it may have changed. */
  const audited = async <R extends FhirResult>(
    method: string,
    target: { type?: string; id?: string; operation?: string },
    write: () => Promise<R>,
  ): Promise<R> => {
    let result: R;
    try {
      result = await write();
    } catch (error) {
      await audit(method, target, error instanceof AppError ? error.status : 500);
      throw error;
    }
    const body = result.body as Resource | undefined;
    const createdId = body?.resourceType === target.type ? body?.id : undefined;
    const id = target.id ?? (result as Partial<Written<Resource>>).id ?? createdId;
    await audit(method, { ...target, ...(id ? { id } : {}) }, result.status);
    if (target.type === 'Patient' && id) deps.panels.forget(id);
    return result;
  };

  /** A practitioner's write: a clinical resource whose every patient reference is a plain `Patient/{id}` of theirs. */
  const assertWritable = async (type: string, resource: Resource, id: string | undefined) => {
    if (scope.kind === 'all') return;
    if (scope.kind !== 'panel' || !LINKING_PARAMS.has(type))
      throw new AppError('forbidden', {
        detail: 'Your role can only create or update clinical resources of your patients.',
      });
    if (resource?.resourceType !== type || (id !== undefined && resource.id !== id)) {
      throw new AppError('validation_failed', {
        errors: [{ path: 'resourceType', message: `must be ${type} (with the id of the URL)` }],
      });
    }
    const patients = linkingReferences(resource).map(strictPatientId);
    const ids = patients.filter((p): p is string => p !== undefined);
    const assigned = ids.length > 0 ? await deps.panels.assigned(scope.practitionerId, ids) : new Set();
    if (ids.length === 0 || ids.length !== patients.length || !ids.every((p) => assigned.has(p)))
      throw new AppError('forbidden', { detail: 'The resource must belong to one of your patients.' });
  };

  const self: ScopedFhir = {
    caller,
    scope,
    read: async <T extends Resource>(type: string, id: string, conditional?: ConditionalRead) => {
      const result = await fhir.read<T>(type, id, conditional);
      // 304 carries no body: it only confirms what the caller already holds, which was checked when it was read
      if (result.status === 304) return result;
      if (!result.body || result.body.id !== id || !(await allowed(result.body)))
        throw new AppError('not_found');
      return result;
    },
    vread: async (type, id, versionId) => {
      const result = await fhir.vread(type, id, versionId);
      if (!result.body || result.body.id !== id || !(await allowed(result.body)))
        throw new AppError('not_found');
      return result;
    },
    history: async (type, id) => {
      await self.read(type, id);
      const result = await fhir.history(type, id);
      return { ...result, body: result.body && (await checkBundle(result.body)) };
    },
    search: async <T extends Resource>(type: string, query: URLSearchParams, route: string) => {
      const narrowed = narrowSearch(type, query, scope);
      if (narrowed.kind === 'empty') return { bundle: emptySearchset<T>(), links: [], next: null };
      const result = await fhir.search<T>(type, narrowed.params);
      return toPage(result.body as Bundle<T>, type, route);
    },
    page: async <T extends Resource>(cursor: string, type: string, route: string) => {
      const link = verifyCursor(deps.secrets.cursorKey, cursor, binding(route, type));
      if (link === undefined) throw invalidCursor();
      const result = await fhir.page<T>(link);
      return toPage(result.body as Bundle<T>, type, route);
    },
    create: async (type, resource) => {
      await assertWritable(type, resource, undefined);
      return audited('POST', { type }, () => fhir.create(type, resource));
    },
    update: async (type, id, resource, ifMatch) => {
      await assertWritable(type, resource, id);
      // the record as it is now must be in scope too: a practitioner cannot take over another's record
      if (scope.kind !== 'all') await self.read(type, id);
      return audited('PUT', { type, id }, () => fhir.update(type, id, resource, { ifMatch }));
    },
    forward: async (request, target) => {
      if (scope.kind !== 'all') throw new AppError('forbidden');
      if (request.method === 'GET') return fhir.forward(request);
      return audited(request.method, target, () => fhir.forward(request));
    },
  };
  return self;
}
