import type { Bundle, Resource } from '@medplum/fhirtypes';
import type { AuditEvent } from '../audit/auditService.js';
import { auditedError, WRITE_ACTIONS } from '../audit/requestAudit.js';
import { AppError } from '../errors.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import { fhirBaseOf } from '../oauth/urls.js';
import { batchEntryOutcomes, forwardedAnswerMismatch, parsedOrNone } from './adminWrites.js';
import { auditedWrite } from './auditedWrites.js';
import { eachAtMost, withinMs } from './boundedCalls.js';
import { type Checked, entriesToJudge, keptInScope, patientsOfKept } from './bundleCheck.js';
import {
  everyReference,
  isMember,
  LINKING_PARAMS,
  type Membership,
  membershipOf,
  patientIdOf,
  patientsIn,
  practitionerWriteReach,
  type Scope,
  type WriteRefusal,
} from './compartment.js';
import { type HistoryOf, historyPath } from './fhirPath.js';
import {
  asReadAnswer,
  type ConditionalRead,
  type FhirRequest,
  type FhirResult,
  type Written,
} from './fhirService.js';
import {
  type CursorBinding,
  cursorForLink,
  cursorUrl,
  verifyCursor,
  whereLinkGoes,
  withEntriesKept,
} from './links.js';
import type { CallerBody } from './negotiation.js';
import { guardScopes, typesShown } from './scopeGuard.js';
import { historyParams, narrowSearch } from './searchPolicy.js';
import { isUpstreamSuccess, unexpectedUpstreamBody, upstreamStatusError } from './upstreamStatus.js';
import {
  notModifiedIfAny,
  resolvedIfMatch,
  sentBatch,
  withCurrentEtag,
  withMatchedEtag,
  withResolvedIfMatch,
  withVersionTag,
} from './versionedWrites.js';

/**
 * One scoped FHIR access per request, built from the verified caller (DESIGN.md section 9):
 * the only way the passthrough and the slim services reach the FHIR server. It owns the scope,
 * the search narrowing (searchPolicy.ts), the response check of every resource that leaves
 * (compartment.ts, panelMembership.ts), the paging cursors (links.ts) and, through
 * fhirService, the one mapping of upstream statuses. Admins (`all`) pass unchanged but are
 * audited on every write (auditedWrites.ts). Every read and search of patient data is recorded
 * as an access event (IHE BALP: who, which patient, which type, read or search) through the
 * batched audit trail, from the patients the response check already worked out; an out-of-scope
 * read is recorded as denied (`out_of_scope`) and answered 404 like a missing resource.
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
  /** The upstream's own text of the Bundle when the check kept it whole (relayed without serialising it again). */
  readonly text?: string;
  /** Whether the upstream's Bundle had a top-level `link` (withLinks: where its text holds one). */
  readonly upstreamLinked: boolean;
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
  /**
   * A history, checked and paged like a search; its cursors page only that history. Scoped roles
   * read a record's own; admins also a type's or the server's.
   */
  history(of: HistoryOf, query: URLSearchParams, route: string): Promise<SearchPage>;
  /** The page a cursor of `history(of, ..., route)` points to, checked the same way. */
  historyPage(cursor: string, of: HistoryOf, route: string): Promise<SearchPage>;
  /**
   * Whether the caller may see the patient `patientId`: their own, one on their panel (asked of the
   * panel lookup the response check uses), any for an admin (not asked of the server). Anything
   * else, someone else's or no one's, is recorded as a denied `attempted` and answered 404 alike.
   */
  assertPatientInScope(patientId: string, attempted: { action: string; type: string }): Promise<void>;
  /** A narrowed, checked search; `route` names where its cursors may be used. */
  search<T extends Resource = Resource>(
    type: string,
    query: URLSearchParams,
    route: string,
  ): Promise<SearchPage<T>>;
  /** The page a cursor of `search(type, ..., route)` points to, checked the same way. */
  page<T extends Resource = Resource>(cursor: string, type: string, route: string): Promise<SearchPage<T>>;
  /** The body's text goes upstream as it came, once its object passed the checks (negotiation.ts, parseCallerBody). */
  create<T extends Resource>(type: string, body: CallerBody<T>): Promise<Written<T>>;
  update<T extends Resource>(
    type: string,
    id: string,
    body: CallerBody<T>,
    ifMatch?: string,
  ): Promise<Written<T>>;
  /** Admins only: any other interaction (operations, batch, PATCH, DELETE, conditional writes), audited. */
  forward(
    request: FhirRequest,
    target: { type?: string; id?: string; operation?: string; compartmentType?: string },
  ): Promise<FhirResult>;
}

/** The caller's reach, from the verified token only: admin all, patient their own, practitioner their panel. */
export function scopeOf(caller: Caller, directory: ReadonlySet<string>): Scope {
  if (caller.role === 'admin') return { kind: 'all', directory };
  if (!caller.fhirId) return { kind: 'none', directory };
  if (caller.role === 'patient') return { kind: 'patient', patientId: caller.fhirId, directory };
  return { kind: 'panel', practitionerId: caller.fhirId, directory };
}

/** Types whose resources are patient data: the Patient and every type of its compartment we follow. */
function isPatientData(type: string): boolean {
  return type === 'Patient' || LINKING_PARAMS.has(type);
}

/** The patients of a Bundle's resources, each once. */
function patientsOfEntries(bundle: Bundle, upstreamBase: string): readonly string[] {
  const entries = Array.isArray(bundle.entry) ? bundle.entry : [];
  return [...new Set(entries.flatMap((e) => (e?.resource ? patientsIn(e.resource, upstreamBase) : [])))];
}

/** Where passthrough cursors are valid: a cursor from a slim endpoint does not work there, and vice versa. */
export const PASSTHROUGH_ROUTE = 'fhir';

/** The slim endpoints that page: each has cursors of its own. */
export type SlimEndpoint = 'patient.observations' | 'practitioner.patients' | 'practitioner.observations';

/**
 * A slim endpoint's cursor route: its name, and the patient it is bound to when its path names one
 * (`practitioner.observations:{patient}`), so a cursor cannot be replayed on another patient's route.
 */
export function slimCursorRoute(endpoint: SlimEndpoint, boundTo?: string): string {
  return boundTo === undefined ? endpoint : `${endpoint}:${boundTo}`;
}

/** The slim endpoint of a cursor route (slimCursorRoute); undefined for the passthrough's, `fhir`. */
function slimRoute(route: string): string | undefined {
  return route === PASSTHROUGH_ROUTE ? undefined : route.split(':')[0];
}

/** What an access event says itself; who asked, from where and about which patient are added per entry. */
type AccessEvent = Pick<
  AuditEvent,
  'action' | 'outcome' | 'errorCode' | 'targetFhirType' | 'targetFhirId' | 'detail'
>;

/** An admin's check needs no panel: nobody is looked up. */
const NONE_ASSIGNED: ReadonlySet<string> = new Set();

function emptySearchset<T extends Resource>(): Bundle<T> {
  return { resourceType: 'Bundle', type: 'searchset', total: 0, entry: [] };
}

/** The answer to a practitioner's write refused by practitionerWriteReach or the panel. */
function writeRefused(reason: WriteRefusal, type: string): AppError {
  switch (reason) {
    case 'not_writable':
      return new AppError('forbidden', {
        detail: 'Your role can only create or update clinical resources of your patients.',
      });
    case 'not_the_url':
      return new AppError('validation_failed', {
        errors: [{ path: 'resourceType', message: `must be ${type} (with the id of the URL)` }],
      });
    case 'not_plain':
      return new AppError('forbidden', {
        detail: 'Every reference in your write must be a plain Type/id (or #id of a contained resource).',
      });
    case 'not_one_value':
      return new AppError('validation_failed', {
        detail: 'A reference R4 allows once (such as subject or patient) is given as a list.',
      });
    case 'no_patient':
      return new AppError('forbidden', {
        detail: 'The resource must belong to one of your patients and name no other patient.',
      });
  }
}

/** A cursor refused, named as the route spells its parameter: `cursor` on a slim list, `_cursor` in a FHIR link. */
function invalidCursor(route: string): AppError {
  return new AppError('validation_failed', {
    errors: [
      {
        path: slimRoute(route) ? 'cursor' : '_cursor',
        message: 'is not valid here or for you, or has expired',
      },
    ],
  });
}

/** How many other records one practitioner write may refer to (each is read to check it). */
const MAX_RECORDS_REFERENCED = 50;
/** The reads of a write's records that run at once (as the panel's lookups). */
const READS_AT_ONCE = 4;

/** How many patients one practitioner write may name (each is asked of the panel lookup). */
const MAX_PATIENTS_REFERENCED = 50;

export function scopedFhir(deps: AppDeps, caller: Caller, ctx: RequestContext): ScopedFhir {
  const scope = scopeOf(caller, deps.config.fhir.directoryTypes);
  const fhir = deps.fhir;
  const shown = typesShown(caller);

  /** The panel members among the patients these memberships name (one upstream lookup at most). */
  const assignedAmong = async (memberships: readonly Membership[]): Promise<ReadonlySet<string>> => {
    if (scope.kind !== 'panel') return new Set();
    const named = memberships.flatMap((m) => (typeof m === 'object' ? m.anyOf : []));
    return named.length > 0 ? deps.panels.assigned(scope.practitionerId, named) : new Set();
  };

  /** Whether a resource is in scope, with the membership the decision was made on. */
  const judge = async (resource: Resource) => {
    const membership = membershipOf(resource, scope, fhir.baseUrl);
    return { membership, kept: isMember(membership, await assignedAmong([membership])) };
  };

  /**
   * Defence in depth: every entry, match or include, is tested before it leaves: against the
   * role's scope, and against the token's read scopes (an `_include`d Patient needs `Patient.r`).
   * Nothing here feeds the panel cache: a Bundle may hold old versions (history) or parts of a
   * record (`_elements`), and only the current, whole record may say whose patient it is.
   * `record`: `Type/id` when the Bundle is that record's history (its deletions may stay).
   */
  const checkBundle = async <T extends Resource>(bundle: Bundle<T>, record?: string): Promise<Checked<T>> => {
    const entries = entriesToJudge(bundle, shown);
    if (scope.kind === 'all') return keptInScope(bundle, entries, scope, fhir.baseUrl, NONE_ASSIGNED);
    const memberships = entries.map((e) => membershipOf(e.resource, scope, fhir.baseUrl));
    const assigned = await assignedAmong(memberships);
    return keptInScope(bundle, entries, scope, fhir.baseUrl, assigned, memberships, record);
  };

  /** One access event per patient (or one without a patient), off the request path. */
  const recordAccess = (event: AccessEvent, patients: Iterable<string>) => {
    // written out key by key: on Node 20 a spread followed by new keys takes V8's slow path,
    // ~1.2 µs a key, and this ran two such spreads (~7 µs) on every audited read
    const entry = (patientId: string | null): AuditEvent => ({
      action: event.action,
      outcome: event.outcome,
      errorCode: event.errorCode,
      targetFhirType: event.targetFhirType,
      targetFhirId: event.targetFhirId,
      detail: event.detail,
      actorUserId: caller.userId,
      actorRole: caller.role,
      requestId: ctx.requestId,
      clientIp: ctx.clientIp,
      patientId,
    });
    // one time for them all: the trail then makes their timestamp once (auditTrail.ts)
    const at = deps.clock.now();
    let none = true;
    for (const patientId of patients) {
      deps.auditTrail.record(entry(patientId), at);
      none = false;
    }
    if (none) deps.auditTrail.record(entry(null), at);
  };

  /** A read or search of patient data that succeeded; directory and terminology reads are not recorded. */
  const recordRead = (
    action: 'fhir.read' | 'fhir.search',
    type: string,
    patients: ReadonlySet<string> | readonly string[],
    extra: { id?: string; detail?: AuditEvent['detail'] } = {},
  ) => {
    // a patient's searches are confined to their own record, whatever they found
    const who = scope.kind === 'patient' && isPatientData(type) ? [scope.patientId] : [...patients];
    if (who.length === 0 && !isPatientData(type)) return;
    recordAccess(
      {
        action,
        outcome: 'success',
        targetFhirType: type || null,
        targetFhirId: extra.id ?? null,
        ...(extra.detail ? { detail: extra.detail } : {}),
      },
      who,
    );
  };

  /** An attempt at these patients' data, outside the scope: recorded as denied, one entry per patient. */
  const recordOutOfScope = (action: string, type: string, patients: readonly string[], id?: string) =>
    recordAccess(
      {
        action,
        outcome: 'denied',
        errorCode: 'out_of_scope',
        targetFhirType: type,
        targetFhirId: id ?? null,
      },
      patients,
    );

  /** The resource exists but is outside the scope: recorded as denied, answered 404 like a missing one. */
  const outOfScope = (action: string, type: string, resource: Resource): AppError => {
    recordOutOfScope(action, type, patientsIn(resource, fhir.baseUrl), resource.id);
    return auditedError(new AppError('not_found'));
  };

  /**
   * The patients a practitioner's search named who are not in their panel. Asked of the panel
   * lookup the response check uses (same answers, same staleness), so such a search gets the
   * answer a patient's naming another patient gets: empty, with no upstream search at all.
   */
  const namedOutsidePanel = async (named: readonly string[]): Promise<readonly string[]> => {
    if (scope.kind !== 'panel' || named.length === 0) return [];
    const assigned = await deps.panels.assigned(scope.practitionerId, named);
    return named.filter((id) => !assigned.has(id));
  };

  /**
   * A read by id in scope. A success is not recorded here (the caller records what it discloses);
   * out of scope is recorded as denied and answered 404.
   */
  const readInScope = async <T extends Resource>(
    type: string,
    id: string,
    fetch: () => Promise<FhirResult<T>>,
    attempted = 'fhir.read',
  ): Promise<{ result: FhirResult<T>; patients: readonly string[] }> => {
    const result = await fetch();
    if (result.status === 304) {
      if (scope.kind === 'all') return { result, patients: [] };
      // a 304 is no proof of scope: `If-None-Match: *` would tell anyone that another patient's resource
      // exists. It is relayed only after a plain read finds the resource in the caller's scope (else 404),
      // with that read's ETag when the server left it out (HAPI does; RFC 9110 section 15.4.5 wants it)
      const confirmed = await readInScope(type, id, () => fhir.read<T>(type, id), attempted);
      const etag = result.headers.etag ?? confirmed.result.headers.etag;
      return {
        result: { ...result, headers: { ...result.headers, ...(etag ? { etag } : {}) } },
        patients: confirmed.patients,
      };
    }
    const body = result.body;
    // an answer about another id than the one asked for is not judged as it: nothing of it is relayed
    if (!body || body.id !== id) throw new AppError('not_found');
    const { membership, kept } = await judge(body);
    if (!kept) throw outOfScope(attempted, type, body);
    return { result, patients: patientsOfKept(body, membership, scope, fhir.baseUrl) };
  };

  const binding = (route: string, type: string): CursorBinding => ({
    userId: caller.userId,
    route,
    type,
    now: deps.clock.now(),
  });

  /** The checked Bundle (`record`: whose history it is), its paging links sealed into cursors for `cursorType` on `route`, and the patients it showed. */
  const sealPage = async <T extends Resource>(
    bundle: Bundle<T>,
    cursorType: string,
    route: string,
    text?: string,
    record?: string,
  ): Promise<{ page: SearchPage<T>; patients: ReadonlySet<string> }> => {
    const checked = await checkBundle(bundle, record);
    const links = (bundle.link ?? []).flatMap((link): PageLink[] => {
      if (!link.url || link.relation === 'self') return [];
      const cursor = cursorForLink(
        deps.secrets.cursorKey,
        binding(route, cursorType),
        link.url,
        fhir.baseUrl,
      );
      // a next page the gateway cannot follow would end the results early without a word (review S3)
      if (!cursor && link.relation === 'next')
        throw unexpectedUpstreamBody(
          `a next link off FHIR_BASE_URL or not plain (${whereLinkGoes(link.url)})`,
        );
      return cursor ? [{ relation: link.relation, cursor }] : [];
    });
    const next = links.find((l) => l.relation === 'next')?.cursor ?? null;
    const relayed = text === undefined ? undefined : checkedText(bundle, checked.bundle, text);
    const page = {
      bundle: { ...checked.bundle, link: undefined } as Bundle<T>,
      links,
      next,
      upstreamLinked: 'link' in bundle,
      ...(relayed !== undefined ? { text: relayed } : {}),
    };
    return { page, patients: checked.patients };
  };

  /** The upstream's text with what the check removed taken out of it (links.ts, withEntriesKept). */
  const checkedText = (upstream: Bundle, checked: Bundle, text: string): string | undefined => {
    if (checked === upstream) return text;
    const left = new Set(checked.entry ?? []);
    const kept = (upstream.entry ?? []).map((e) => left.has(e));
    return withEntriesKept(text, kept, 'total' in upstream && !('total' in checked));
  };

  const toPage = async <T extends Resource>(
    bundle: Bundle<T>,
    type: string,
    route: string,
    text?: string,
  ) => {
    const { page, patients } = await sealPage(bundle, type, route, text);
    const slim = slimRoute(route);
    recordRead('fhir.search', type, patients, slim ? { detail: { route: slim } } : {});
    return page;
  };

  const toHistoryPage = async (result: FhirResult<Bundle>, of: HistoryOf, route: string) => {
    const record = of.type && of.id ? `${of.type}/${of.id}` : undefined;
    const { page, patients } = await sealPage(
      result.body as Bundle,
      historyPath(of),
      route,
      result.text,
      record,
    );
    const detail = { interaction: 'history' };
    if (of.id) recordRead('fhir.read', of.type ?? '', patients, { id: of.id, detail });
    else recordRead('fhir.search', of.type ?? '', patients, { detail });
    return page;
  };

  /**
   * An admin's forwarded answer (`$everything`, a batch whose entries are searches) with every
   * upstream paging link in it sealed into a cursor for the base (`/fhir?_cursor=`), as a search's
   * are: HAPI's `?_getpages=` never reaches a client.
   */
  const withSealedLinks = (result: FhirResult): FhirResult => {
    const body = result.body as Resource | undefined;
    if (body?.resourceType !== 'Bundle') return result;
    const sealed = sealLinksIn(body);
    if (sealed === body) return result;
    const { text: _upstreamText, ...changed } = result;
    return { ...changed, body: sealed };
  };

  const sealLinksIn = (bundle: Bundle): Bundle => {
    // a Bundle nested in an entry was not checked as the answer's own was (assertBundleShape):
    // one whose link or entry is not a list is left as it came, never a TypeError after a write was done
    if (!Array.isArray(bundle.link ?? []) || !Array.isArray(bundle.entry ?? [])) return bundle;
    let changed = false;
    const link = bundle.link?.map((l) => {
      const url: unknown = l?.url;
      const cursor =
        typeof url === 'string' &&
        cursorForLink(deps.secrets.cursorKey, binding(PASSTHROUGH_ROUTE, ''), url, fhir.baseUrl);
      if (!cursor) return l;
      changed = true;
      return { ...l, url: cursorUrl(fhirBaseOf(deps.config), '', cursor) };
    });
    const entry = bundle.entry?.map((e) => {
      if (e?.resource?.resourceType !== 'Bundle') return e;
      const inner = sealLinksIn(e.resource);
      if (inner === e.resource) return e;
      changed = true;
      return { ...e, resource: inner };
    });
    return changed ? { ...bundle, ...(link ? { link } : {}), ...(entry ? { entry } : {}) } : bundle;
  };

  const assertHistoryInScope = async ({ type, id }: HistoryOf) => {
    if (scope.kind === 'all') return;
    // a type's or the server's history lists everyone's versions
    if (!type || !id)
      throw new AppError('forbidden', { detail: 'Type-level history is not allowed for your role.' });
    await readInScope(type, id, () => fhir.read(type, id));
  };

  /**
   * An admin's read by id, history or GET operation: recorded with the patients of what came
   * back, and a Bundle's entries of types the token may not read removed.
   */
  const checkForwardedRead = async (
    result: FhirResult,
    target: { type?: string; id?: string; operation?: string },
  ): Promise<FhirResult> => {
    const body = result.body as Resource | undefined;
    if (!body) return result;
    // a record read by id (asReadAnswer); an operation's 202 (`$export` kick-off) stays
    if (target.id && !target.operation) result = asReadAnswer(result);
    const checked = body.resourceType === 'Bundle' ? await checkBundle(body) : undefined;
    recordRead(
      target.id ? 'fhir.read' : 'fhir.search',
      target.type ?? '',
      checked?.patients ?? patientsIn(body, fhir.baseUrl),
      {
        ...(target.id ? { id: target.id } : {}),
        ...(target.operation ? { detail: { operation: target.operation } } : {}),
      },
    );
    if (!checked || checked.bundle === body) return result;
    const { text: _upstreamText, ...changed } = result;
    return { ...changed, body: checked.bundle };
  };

  /**
   * Each entry of an admin's batch or transaction, recorded as if it had come alone (the batch's
   * own entry names no record): a write with the record and the patients its answer shows, a
   * read of patient data as an access event.
   */
  const recordBatchEntries = (asked: unknown, answer: unknown) => {
    try {
      recordEachEntry(asked, answer);
    } catch (error) {
      // the batch is done upstream: an answer we cannot read entry by entry must not turn it into a 500
      deps.logger.warn({ err: error, request_id: ctx.requestId }, 'batch answer not audited entry by entry');
    }
  };

  const recordEachEntry = (asked: unknown, answer: unknown) => {
    const bundle = answer as Bundle | undefined;
    if (bundle?.resourceType !== 'Bundle' || !/^(batch|transaction)-response$/.test(bundle.type ?? ''))
      return;
    const request = typeof asked === 'string' ? parsedOrNone(asked) : asked;
    for (const [index, entry] of batchEntryOutcomes(request, bundle).entries()) {
      const found = entry.resource;
      const patients = !found
        ? []
        : found.resourceType === 'Bundle'
          ? patientsOfEntries(found, fhir.baseUrl)
          : patientsIn(found, fhir.baseUrl);
      const detail = { method: entry.method, status: entry.status, batch_entry: index };
      const succeeded = isUpstreamSuccess(entry.status);
      if (entry.method === 'GET' || entry.method === 'HEAD') {
        const action = found?.resourceType === 'Bundle' ? 'fhir.search' : 'fhir.read';
        if (succeeded)
          recordRead(action, entry.type ?? '', patients, { ...(entry.id ? { id: entry.id } : {}), detail });
        continue;
      }
      recordAccess(
        {
          action: WRITE_ACTIONS[entry.method] ?? 'fhir.write',
          outcome: succeeded ? 'success' : 'failed',
          ...(succeeded ? {} : { errorCode: upstreamStatusError(entry.status, 'forwarded').code }),
          targetFhirType: entry.type ?? null,
          targetFhirId: entry.id ?? null,
          detail,
        },
        patients,
      );
    }
  };

  /** Whether every patient id is on the practitioner's panel. */
  const allAssigned = async (practitionerId: string, ids: readonly string[]) => {
    const unique = [...new Set(ids)];
    // more than a write may name: not asked one by one of the panel lookup (a stored List of thousands, on update)
    if (unique.length > MAX_PATIENTS_REFERENCED) return false;
    const assigned = unique.length > 0 ? await deps.panels.assigned(practitionerId, unique) : new Set();
    return unique.every((p) => assigned.has(p));
  };

  /**
   * A practitioner's write: a clinical resource that belongs to one of their patients through a
   * Reference (`subject`, `patient`), whose every reference is a plain `Type/id`, and that names
   * no patient but theirs (compartment.ts, practitionerWriteReach); every patient it names on
   * their panel, every other record it points at readable by them.
   */
  const assertWritable = async (type: string, resource: Resource, id: string | undefined) => {
    if (scope.kind === 'all') return;
    if (scope.kind !== 'panel') throw writeRefused('not_writable', type);
    const reach = practitionerWriteReach(type, resource, id, scope.directory);
    if ('refused' in reach) throw writeRefused(reach.refused, type);
    // each unknown patient is a panel lookup upstream and an entry in the bounded panel cache:
    // 20,000 named in one write cost 360 upstream searches and evicted other practitioners' answers
    if (reach.patients.length > MAX_PATIENTS_REFERENCED)
      throw new AppError('validation_failed', {
        detail: `A write may name at most ${MAX_PATIENTS_REFERENCED} patients.`,
      });
    if (!(await allAssigned(scope.practitionerId, reach.patients))) throw writeRefused('no_patient', type);
    await assertReadable(reach.records, id === undefined ? 'fhir.create' : 'fhir.update');
  };

  /**
   * Every other record a practitioner's write points at must be one they may read: HAPI refuses a
   * reference to an id that does not exist (400) and stores one that does, which would tell
   * whether anyone's record has that id. Missing and out of scope are one 403.
   */
  const assertReadable = async (records: readonly { type: string; id: string }[], attempted: string) => {
    // each is one upstream read: a write of thousands of references must not become thousands of reads
    if (records.length > MAX_RECORDS_REFERENCED)
      throw new AppError('validation_failed', {
        detail: `A write may refer to at most ${MAX_RECORDS_REFERENCED} other records (patients and the directory aside).`,
      });
    const confirm = async ({ type, id }: { type: string; id: string }) => {
      try {
        await readInScope(type, id, () => fhir.read(type, id), attempted);
      } catch (error) {
        if (!(error instanceof AppError && error.code === 'not_found')) throw error;
        throw new AppError('forbidden', {
          detail: 'Every record your write refers to must be one you can read.',
        });
      }
    };
    // one after another behind a slow server, 50 reads took minutes: a few at once, in one FHIR
    // timeout; none starts once the write is refused (a read failed) or answered 504
    const stop = { stopped: false };
    await withinMs(
      eachAtMost(records, READS_AT_ONCE, confirm, stop),
      deps.config.fhir.timeoutMs,
      'the reads of the records a write refers to past one FHIR timeout',
      stop,
    );
  };

  /**
   * The record as it is now, for an update: in scope, and naming no patient off the panel — a
   * record shared with another patient (an Account, a Provenance of two) is not the practitioner's
   * to rewrite. Returned for the If-Match check (admins: not read here).
   */
  const assertUpdatable = async (type: string, id: string): Promise<Resource | undefined> => {
    if (scope.kind === 'all') return undefined;
    const { result } = await readInScope(type, id, () => fhir.read(type, id), 'fhir.update');
    const named = everyReference(result.body).flatMap((ref) => patientIdOf(ref) ?? []);
    if (scope.kind !== 'panel' || !(await allAssigned(scope.practitionerId, named)))
      throw new AppError('forbidden', { detail: 'The resource also belongs to a patient who is not yours.' });
    return result.body;
  };

  const self: ScopedFhir = {
    caller,
    scope,
    read: async <T extends Resource>(type: string, id: string, conditional?: ConditionalRead) => {
      const { result, patients } = await readInScope(type, id, () => fhir.read<T>(type, id, conditional));
      recordRead('fhir.read', type, patients, { id });
      return notModifiedIfAny(result, conditional?.ifNoneMatch);
    },
    vread: async (type, id, versionId) => {
      // judged with the record as it is now too (as history is): an old version may still name a
      // former practitioner or patient, and version ids are easy to guess (HAPI counts 1, 2, 3)
      if (scope.kind !== 'all') await readInScope(type, id, () => fhir.read(type, id));
      const { result, patients } = await readInScope(type, id, () => fhir.vread(type, id, versionId));
      recordRead('fhir.read', type, patients, { id, detail: { interaction: 'vread' } });
      return result;
    },
    history: async (of, query, route) => {
      const params = historyParams(query, scope);
      await assertHistoryInScope(of);
      return toHistoryPage(await fhir.history(of, params), of, route);
    },
    historyPage: async (cursor, of, route) => {
      // the record as it is now decides, on every page: a patient moved away since the first page is gone
      await assertHistoryInScope(of);
      const link = verifyCursor(deps.secrets.cursorKey, cursor, binding(route, historyPath(of)));
      if (link === undefined) throw invalidCursor(route);
      return toHistoryPage(await fhir.page(link), of, route);
    },
    assertPatientInScope: async (patientId, attempted) => {
      const inScope =
        scope.kind === 'all' ||
        (scope.kind === 'patient' && scope.patientId === patientId) ||
        (scope.kind === 'panel' && (await namedOutsidePanel([patientId])).length === 0);
      if (inScope) return;
      recordOutOfScope(attempted.action, attempted.type, [patientId]);
      throw auditedError(new AppError('not_found'));
    },
    search: async <T extends Resource>(type: string, query: URLSearchParams, route: string) => {
      const narrowed = narrowSearch(type, query, scope);
      const outside = narrowed.kind === 'empty' ? narrowed.outside : await namedOutsidePanel(narrowed.named);
      // the client named a patient outside the scope: an empty answer, and a denied attempt at them in the audit
      if (narrowed.kind === 'empty' || outside.length > 0) {
        recordOutOfScope('fhir.search', type, outside);
        return { bundle: emptySearchset<T>(), links: [], next: null, upstreamLinked: false };
      }
      const result = await fhir.search<T>(type, narrowed.params);
      return toPage(result.body as Bundle<T>, type, route, result.text);
    },
    page: async <T extends Resource>(cursor: string, type: string, route: string) => {
      const link = verifyCursor(deps.secrets.cursorKey, cursor, binding(route, type));
      if (link === undefined) throw invalidCursor(route);
      const result = await fhir.page<T>(link);
      return toPage(result.body as Bundle<T>, type, route, result.text);
    },
    create: async (type, { resource, text }) => {
      await assertWritable(type, resource, undefined);
      return auditedWrite({ deps, caller, ctx }, 'POST', { type }, () =>
        fhir.create(type, resource, { text }),
      );
    },
    update: async (type, id, { resource, text }, ifMatch) => {
      await assertWritable(type, resource, id);
      // the record as it is now must be theirs too: a practitioner cannot take over another's record
      const current = await assertUpdatable(type, id);
      const tag = ifMatch === undefined ? undefined : await resolvedIfMatch(fhir, type, id, ifMatch, current);
      return auditedWrite({ deps, caller, ctx }, 'PUT', { type, id }, () =>
        fhir.update(type, id, resource, { ifMatch: tag, text }),
      );
    },
    forward: async (request, target) => {
      // a request relayed as it came is checked by nothing above: an admin's alone, whatever the caller routed here
      if (scope.kind !== 'all') throw new AppError('forbidden');
      if (request.method === 'GET') {
        const ifNoneMatch = request.headers?.['if-none-match'];
        const answered = await fhir.forward(request);
        // a read answers what it read: a success without a body (a 204) is the server's fault, not an empty record
        if (answered.status !== 304 && answered.body === undefined)
          throw unexpectedUpstreamBody(`${answered.status} without a body to a read`);
        const mismatch = forwardedAnswerMismatch('GET', target, answered);
        if (mismatch) throw unexpectedUpstreamBody(mismatch);
        const matched = withMatchedEtag(answered, ifNoneMatch);
        const result = await withCurrentEtag(fhir, matched, target, request.path);
        const checked = await checkForwardedRead(result, target);
        return withSealedLinks(
          target.id && !target.operation ? notModifiedIfAny(checked, ifNoneMatch) : checked,
        );
      }
      const batch = !target.type && !target.operation;
      const sent = await withResolvedIfMatch(fhir, request, target);
      const result = await auditedWrite({ deps, caller, ctx }, request.method, target, async () => {
        if (batch) return sentBatch(fhir, sent);
        const answered = await fhir.forward(sent);
        // checked before it is audited: a success the server could not have meant is a failure
        const mismatch = forwardedAnswerMismatch(request.method, target, answered);
        if (mismatch) throw unexpectedUpstreamBody(mismatch);
        return withVersionTag(answered);
      });
      if (batch) recordBatchEntries(request.body, result.body);
      return withSealedLinks(result);
    },
  };
  // the token's SMART scopes, checked once per interaction on top of the role's compartment
  return guardScopes(self);
}
