import type { Bundle, BundleLink, Resource } from '@medplum/fhirtypes';
import { writeAudit } from '../audit/auditService.js';
import { AppError, type ErrorCode } from '../errors.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import { inScope, LINKING_PARAMS, linkingReferences, type Scope, strictPatientId } from './compartment.js';
import { type FhirTarget, parseFhirPath } from './fhirPath.js';
import type { FhirMethod, FhirResponse } from './fhirService.js';
import { cursorForLink, relativeToBase, replaceUpstreamBase, verifyCursor } from './links.js';
import { narrowSearch } from './searchPolicy.js';

/**
 * The filtered FHIR passthrough (DESIGN.md section 6), in three layers: check the request
 * (path model, role, allow-lists), narrow it (compartment parameter added), check the response
 * (every entry tested for membership before it leaves). Admin requests pass unchanged; every
 * write is audited. Nothing of the upstream leaks: base URLs are rewritten, paging links become
 * signed cursors, headers are allow-listed, upstream error texts are replaced by ours.
 */

export interface PassRequest {
  readonly method: string;
  readonly rawPath: string;
  readonly query: URLSearchParams;
  readonly body: string | undefined;
  readonly contentType: string | undefined;
  readonly headers: Readonly<Record<string, string | undefined>>;
}

export interface PassResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  /** Serialized JSON, ready to send (serialized once, with the upstream base already replaced). */
  readonly body: string | undefined;
}

/** Request headers relayed upstream (conditional requests); nothing else, never Authorization. */
const RELAYED_REQUEST_HEADERS = ['if-match', 'if-none-match', 'if-modified-since', 'if-none-exist', 'prefer'];

const CURSOR_ROUTE = 'fhir';

/** Upstream error statuses and the code we answer with (our own text, never the upstream's diagnostics). */
function upstreamError(status: number): AppError {
  const byStatus: Record<number, ErrorCode> = {
    400: 'validation_failed',
    404: 'not_found',
    405: 'method_not_allowed',
    409: 'conflict',
    410: 'not_found',
    412: 'conflict',
    413: 'payload_too_large',
    415: 'unsupported_media_type',
    422: 'validation_failed',
  };
  const code = byStatus[status];
  if (!code) return new AppError('upstream_error', { cause: new Error(`FHIR server answered ${status}`) });
  return code === 'validation_failed'
    ? new AppError(code, { detail: 'The FHIR server refused the request.' })
    : new AppError(code);
}

function successOutcome() {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'information', code: 'informational', details: { text: 'The request succeeded.' } }],
  };
}

function emptySearchset(): Bundle {
  return { resourceType: 'Bundle', type: 'searchset', total: 0, entry: [] };
}

class Passthrough {
  private readonly upstreamBase: string;
  private readonly publicBase: string;

  constructor(
    private readonly deps: AppDeps,
    private readonly caller: Caller,
    private readonly scope: Scope,
    private readonly ctx: RequestContext,
  ) {
    this.upstreamBase = deps.fhir.baseUrl;
    this.publicBase = `${deps.config.publicBaseUrl}/fhir`;
  }

  async handle(request: PassRequest): Promise<PassResponse> {
    const target = parseFhirPath(request.rawPath);
    const cursor = request.query.get('_cursor');
    if (cursor !== null) return this.page(target, request, cursor);
    return this.scope.kind === 'all' ? this.forwardAsAdmin(target, request) : this.scoped(target, request);
  }

  // --- admin: everything passes; writes are audited ---

  private async forwardAsAdmin(target: FhirTarget, request: PassRequest): Promise<PassResponse> {
    const method = request.method.toUpperCase() as FhirMethod;
    const headers: Record<string, string> = {};
    for (const name of RELAYED_REQUEST_HEADERS) {
      const value = request.headers[name];
      if (value) headers[name] = value;
    }
    if (request.contentType) headers['content-type'] = request.contentType;
    const isSearchPost = target.searchPost === true;
    const response = await this.deps.fhir.request({
      method: isSearchPost ? 'GET' : method,
      path: target.upstreamPath,
      query: isSearchPost ? new URLSearchParams(request.body ?? '') : request.query,
      ...(request.body !== undefined && !isSearchPost ? { body: request.body } : {}),
      headers: isSearchPost ? {} : headers,
    });
    if (method !== 'GET' && !isSearchPost) await this.auditWrite(method, target, response);
    return this.answer(response, target);
  }

  private async auditWrite(method: string, target: FhirTarget, response: FhirResponse): Promise<void> {
    const action = target.operation
      ? 'fhir.operation'
      : !target.type
        ? 'fhir.batch'
        : (({ POST: 'fhir.create', PUT: 'fhir.update', PATCH: 'fhir.patch', DELETE: 'fhir.delete' } as const)[
            method as 'POST'
          ] ?? 'fhir.write');
    const created = response.body as Resource | undefined;
    await writeAudit(this.deps.db, this.deps.clock, {
      action,
      outcome: response.status < 400 ? 'success' : 'failed',
      actorUserId: this.caller.userId,
      actorRole: this.caller.role,
      targetFhirType: target.type ?? null,
      targetFhirId: target.id ?? (created?.resourceType === target.type ? (created?.id ?? null) : null),
      requestId: this.ctx.requestId,
      clientIp: this.ctx.clientIp,
      detail: {
        method,
        status: response.status,
        ...(target.operation ? { operation: target.operation } : {}),
      },
    });
  }

  // --- patients and practitioners: read inside the scope; practitioners also write there ---

  private async scoped(target: FhirTarget, request: PassRequest): Promise<PassResponse> {
    const method = request.method.toUpperCase();
    const refuse = (message: string) => new AppError('validation_failed', { detail: message });
    if (target.operation) throw refuse(`The operation ${target.operation} is not allowed for your role.`);
    if (target.compartmentType)
      throw refuse('Compartment searches are not supported; search the type instead.');
    if (!target.type)
      throw refuse('System-level search, history, batch and transaction are not allowed for your role.');
    if (target.history && !target.id) throw refuse('Type-level history is not allowed for your role.');

    if (target.searchPost) {
      if (method !== 'POST') throw new AppError('method_not_allowed');
      if (!/^application\/x-www-form-urlencoded\b/i.test(request.contentType ?? ''))
        throw new AppError('unsupported_media_type');
      return this.search(target.type, new URLSearchParams(request.body ?? ''));
    }
    if (method === 'GET') {
      if (!target.id) return this.search(target.type, request.query);
      if (target.history && !target.versionId) return this.history(target);
      return this.read(target);
    }
    if (this.scope.kind === 'patients' && this.scope.canWrite && (method === 'POST' || method === 'PUT')) {
      return this.write(method, target, request);
    }
    throw new AppError('forbidden', { detail: 'Your role cannot change FHIR data here.' });
  }

  private async search(type: string, query: URLSearchParams): Promise<PassResponse> {
    const narrowed = narrowSearch(type, query, this.scope);
    if (narrowed.kind === 'empty')
      return { status: 200, headers: {}, body: JSON.stringify(emptySearchset()) };
    const response = await this.deps.fhir.request({ method: 'GET', path: type, query: narrowed.params });
    return this.answer(response, { type, upstreamPath: type });
  }

  /** Read and vread: a resource outside the scope answers exactly like a missing one. */
  private async read(target: FhirTarget): Promise<PassResponse> {
    const response = await this.deps.fhir.request<Resource>({ method: 'GET', path: target.upstreamPath });
    if (response.status >= 400) throw upstreamError(response.status);
    const resource = response.body;
    if (!resource || resource.resourceType !== target.type || !inScope(resource, this.scope))
      throw new AppError('not_found');
    return this.answer(response, target);
  }

  private async history(target: FhirTarget): Promise<PassResponse> {
    await this.read({ ...target, history: false, upstreamPath: `${target.type}/${target.id}` });
    const response = await this.deps.fhir.request({ method: 'GET', path: target.upstreamPath });
    return this.answer(response, target);
  }

  /** Practitioners: create or update a clinical resource whose patient is one of theirs, checked before the call. */
  private async write(
    method: 'POST' | 'PUT',
    target: FhirTarget,
    request: PassRequest,
  ): Promise<PassResponse> {
    if (
      !target.type ||
      !LINKING_PARAMS.has(target.type) ||
      target.history ||
      (method === 'PUT') !== !!target.id
    ) {
      throw new AppError('forbidden', {
        detail: 'Your role can only create or update clinical resources of your patients.',
      });
    }
    let resource: Resource;
    try {
      resource = JSON.parse(request.body ?? '') as Resource;
    } catch {
      throw new AppError('invalid_json');
    }
    if (resource?.resourceType !== target.type || (target.id && resource.id !== target.id)) {
      throw new AppError('validation_failed', {
        errors: [{ path: 'resourceType', message: `must be ${target.type} (with the id of the URL)` }],
      });
    }
    // every patient reference must be a plain `Patient/{id}` of one of theirs: no absolute or odd forms
    const references = linkingReferences(resource);
    const scope = this.scope;
    const ownPatients = references.map(strictPatientId);
    if (
      scope.kind !== 'patients' ||
      ownPatients.length === 0 ||
      !ownPatients.every((id) => id !== undefined && scope.patientIds.has(id))
    ) {
      throw new AppError('forbidden', { detail: 'The resource must belong to one of your patients.' });
    }
    // conditional headers run a search upstream outside our checks (an oracle on other patients' data)
    if (request.headers['if-none-exist'] || [...request.query.keys()].length > 0) {
      throw new AppError('validation_failed', {
        detail: 'Conditional create and query parameters on writes are not available for your role.',
      });
    }
    if (method === 'PUT')
      await this.read({ type: target.type, id: target.id, upstreamPath: `${target.type}/${target.id}` });
    return this.forwardAsAdmin(target, {
      ...request,
      query: new URLSearchParams(),
      headers: { 'if-match': request.headers['if-match'] },
      body: JSON.stringify(resource),
      contentType: 'application/fhir+json',
    });
  }

  // --- paging ---

  private async page(target: FhirTarget, request: PassRequest, cursor: string): Promise<PassResponse> {
    if ([...request.query.keys()].length !== 1 || target.id || request.method.toUpperCase() !== 'GET') {
      throw new AppError('validation_failed', {
        errors: [{ path: '_cursor', message: 'must be used alone, on a type or the base' }],
      });
    }
    const relative = verifyCursor(
      this.deps.secrets.cursorKey,
      cursor,
      this.caller.userId,
      CURSOR_ROUTE,
      this.deps.clock.now(),
    );
    if (relative === undefined) {
      throw new AppError('validation_failed', {
        errors: [{ path: '_cursor', message: 'is not valid for you, or has expired' }],
      });
    }
    const [path = '', query = ''] = relative.split('?', 2);
    // the page must be a search of the type the link was issued for (or the base, for servers that page there)
    const pageTarget = parseFhirPath(`/fhir${path ? `/${path}` : ''}`);
    if (
      pageTarget.id ||
      pageTarget.operation ||
      (pageTarget.type && pageTarget.type !== target.type && this.scope.kind !== 'all')
    ) {
      throw new AppError('validation_failed', {
        errors: [{ path: '_cursor', message: 'does not belong here' }],
      });
    }
    const response = await this.deps.fhir.request({
      method: 'GET',
      path: pageTarget.upstreamPath,
      query: new URLSearchParams(query),
    });
    return this.answer(response, target);
  }

  // --- the response check and the rewriting ---

  private async answer(response: FhirResponse, target: FhirTarget): Promise<PassResponse> {
    if (response.status >= 400) throw upstreamError(response.status);
    let body = response.body;
    const type = (body as Resource | undefined)?.resourceType;
    if (type === 'Bundle') {
      body = this.checkBundle(body as Bundle, target);
    } else if (type === 'OperationOutcome') {
      // an upstream OperationOutcome (e.g. after a delete) carries its own diagnostics: answer with ours
      body = successOutcome();
    } else if (body && this.scope.kind === 'patients' && !inScope(body as Resource, this.scope)) {
      throw new AppError('not_found');
    }
    const text =
      body === undefined
        ? undefined
        : replaceUpstreamBase(JSON.stringify(body), this.upstreamBase, this.publicBase);
    return {
      status: response.status,
      headers: this.relayHeaders(response.headers),
      body: text,
    };
  }

  /** Defence in depth: every entry, match or include, is tested before it leaves; totals go when anything was dropped. */
  private checkBundle(bundle: Bundle, target: FhirTarget): Bundle {
    const entries = bundle.entry ?? [];
    const kept = entries.filter(
      (e) => e.resource && e.resource.resourceType !== 'OperationOutcome' && inScope(e.resource, this.scope),
    );
    const checked: Bundle = { ...bundle, entry: kept, link: this.pagingLinks(bundle.link ?? [], target) };
    if (kept.length !== entries.length) delete checked.total;
    return checked;
  }

  /** Upstream paging links become gateway links with a signed cursor bound to the caller. */
  private pagingLinks(links: BundleLink[], target: FhirTarget): BundleLink[] {
    const at = target.type ? `${this.publicBase}/${target.type}` : this.publicBase;
    const scope = {
      key: this.deps.secrets.cursorKey,
      userId: this.caller.userId,
      route: CURSOR_ROUTE,
      now: this.deps.clock.now(),
    };
    return links.flatMap((link) => {
      const token =
        link.url && link.relation !== 'self' ? cursorForLink(scope, link.url, this.upstreamBase) : undefined;
      return token ? [{ relation: link.relation, url: `${at}?_cursor=${token}` }] : [];
    });
  }

  private relayHeaders(upstream: Readonly<Record<string, string>>): Record<string, string> {
    const headers: Record<string, string> = { 'Content-Type': 'application/fhir+json; charset=utf-8' };
    if (upstream.etag) headers.ETag = upstream.etag;
    if (upstream['last-modified']) headers['Last-Modified'] = upstream['last-modified'];
    for (const name of ['location', 'content-location'] as const) {
      const value = upstream[name];
      const relative = value ? relativeToBase(value, this.upstreamBase) : undefined;
      if (relative !== undefined)
        headers[name === 'location' ? 'Location' : 'Content-Location'] = `${this.publicBase}/${relative}`;
    }
    return headers;
  }
}

/** Handles one /fhir request for a verified caller within the given scope. */
export function passthrough(
  deps: AppDeps,
  caller: Caller,
  scope: Scope,
  ctx: RequestContext,
  request: PassRequest,
) {
  return new Passthrough(deps, caller, scope, ctx).handle(request);
}
