import type { Bundle, Resource } from '@medplum/fhirtypes';
import { AppError } from '../errors.js';
import { FHIR_JSON } from '../http/fhirJson.js';
import { isWellFormedQuery } from '../http/percentEncoding.js';
import type { AppDeps } from '../http/types.js';
import { fhirBaseOf } from '../oauth/urls.js';
import { roleLinkedTo } from '../users/fhirIdentity.js';
import { findUserByFhirResource } from '../users/userRepository.js';
import {
  assertAdminWrite,
  assertBatchBody,
  assertPatchBody,
  PEOPLE,
  type PersonWrite,
  withOurOutcomes,
} from './adminWrites.js';
import { type FhirTarget, historyPath, parseFhirPath } from './fhirPath.js';
import { currentOrNone, type FhirMethod, type FhirResult } from './fhirService.js';
import { cursorUrl, relativeToBase, replaceUpstreamBase, withLinks } from './links.js';
import {
  assertCountReadable,
  assertEntityTags,
  assertJsonBody,
  assertQuerySize,
  assertUtf8Charset,
  type CallerBody,
  jsonOnly,
  parseCallerBody,
  preferredBody,
  successOutcome,
} from './negotiation.js';
import { PASSTHROUGH_ROUTE, type PageLink, type ScopedFhir, type SearchPage } from './scopedFhir.js';
import { assertScopedInteraction, compartmentSearchQuery, cursorCompanions } from './searchPolicy.js';
import { readSubset, type Subset, subsetOf } from './subsetting.js';
import { unexpectedUpstreamBody } from './upstreamStatus.js';

/**
 * The filtered FHIR passthrough (DESIGN.md section 6): the request's path is parsed into the
 * one path model, dispatched to the caller's scoped FHIR access (scopedFhir.ts: scope,
 * narrowing, response check, cursors, upstream statuses), and the answer is rendered for the
 * client: base URLs rewritten, paging links turned into gateway links carrying the signed
 * cursor, headers allow-listed, upstream texts replaced by ours. Only an admin's write of a
 * person asks the server directly, to check it against our accounts (`assertPersonWrite`).
 */

export interface PassRequest {
  readonly method: string;
  readonly rawPath: string;
  /** The raw query string without `?`, as the client sent it (its size is checked). */
  readonly rawQuery: string;
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

/** Request headers an admin's request relays upstream (conditional requests); never Authorization. */
const RELAYED_REQUEST_HEADERS = ['if-match', 'if-none-match', 'if-modified-since', 'if-none-exist', 'prefer'];

/** A checked read cut to the subset asked for; its upstream text no longer says what is sent. */
function subsetted(result: FhirResult, subset: Subset | undefined): FhirResult {
  if (!subset || result.body === undefined) return result;
  const { text: _whole, ...rest } = result;
  return { ...rest, body: subsetOf(result.body as Resource, subset) };
}

function refuse(message: string): AppError {
  return new AppError('validation_failed', { detail: message });
}

class Passthrough {
  private readonly db: AppDeps['db'];
  private readonly upstream: AppDeps['fhir'];
  private readonly upstreamBase: string;
  private readonly publicBase: string;

  constructor(
    deps: AppDeps,
    private readonly fhir: ScopedFhir,
  ) {
    this.db = deps.db;
    this.upstream = deps.fhir;
    this.upstreamBase = deps.fhir.baseUrl;
    this.publicBase = fhirBaseOf(deps.config);
  }

  async handle(sent: PassRequest): Promise<PassResponse> {
    assertQuerySize(sent.rawQuery, sent.query);
    assertCountReadable(sent.query);
    const query = jsonOnly(sent.query, sent.headers.accept);
    assertEntityTags(sent.headers);
    const request = query === sent.query ? sent : { ...sent, query };
    const target = parseFhirPath(request.rawPath);
    const method = request.method.toUpperCase();
    // FHIR's RESTful API has these alone: another method (PROPFIND, a WebDAV verb) must not reach the server (HAPI: 501)
    if (!FHIR_METHODS.has(method))
      throw new AppError('method_not_allowed', { headers: { Allow: FHIR_ALLOW } });
    const cursor = request.query.get('_cursor');
    if (cursor !== null) return this.page(target, request, cursor);
    if (target.searchPost) return this.searchPost(target, request);
    // `If-None-Match: *` on a write asks not to replace what exists (RFC 9110 section 13.1.2); R4
    // defines the header for reads only, and neither HAPI nor the embedded engine honours it there:
    // the record was replaced
    if (method !== 'GET' && request.headers['if-none-match'] !== undefined)
      throw refuse(
        'If-None-Match is for reads; write with If-Match (a version) or If-None-Exist (a create).',
      );
    if (this.fhir.scope.kind === 'all') return this.asAdmin(method, target, request);
    return this.scoped(method, target, request);
  }

  // --- admin: reads and searches like everyone (cursors, rewriting); anything else forwarded and audited ---

  private async asAdmin(method: string, target: FhirTarget, request: PassRequest): Promise<PassResponse> {
    const typeLevel = !target.operation && !target.compartmentType && !target.history && !target.id;
    if (method === 'GET' && typeLevel) return this.search(target.type ?? '', request.query, request.rawQuery);
    if (method === 'GET' && isHistory(target)) return this.history(target, request);
    // the exact POST /fhir/Patient is the provisioning route; a variant of it (`/fhir/Patient/`)
    // must not create a person without an account, a validated profile and a code
    if (method === 'POST' && typeLevel && PEOPLE.has(target.type ?? ''))
      throw refuse(`Create a ${target.type} with POST /fhir/${target.type}: it provisions their account.`);
    await this.assertAdminWrite(method, target, request);
    const headers: Record<string, string> = {};
    for (const name of RELAYED_REQUEST_HEADERS) {
      const value = request.headers[name];
      if (value) headers[name] = value;
    }
    if (request.contentType) headers['content-type'] = request.contentType;
    const result = await this.fhir.forward(
      {
        method: method as FhirMethod,
        path: target.upstreamPath,
        query: request.query,
        ...(request.body !== undefined ? { body: request.body } : {}),
        headers,
      },
      {
        ...(target.type ? { type: target.type } : {}),
        ...(target.id ? { id: target.id } : {}),
        ...(target.operation ? { operation: target.operation } : {}),
        ...(target.compartmentType ? { compartmentType: target.compartmentType } : {}),
      },
    );
    return this.render(result, target.operation !== undefined);
  }

  /** Shapes the server cannot read are 400 here; a person is written only where no account is lost or left without one. */
  private async assertAdminWrite(method: string, target: FhirTarget, request: PassRequest): Promise<void> {
    assertAdminWrite(method, target, request.query, request.headers['if-match']);
    if (request.body !== undefined) assertUtf8Charset(request.contentType);
    // a JSON body the server would misread (1e400: HAPI's 500) is the caller's 400, as for everyone
    // (PATCH and batch bodies are read so by their own checks)
    if (method === 'PATCH') assertPatchBody(target, request.contentType, request.body);
    else if (method === 'POST' && !target.type && !target.operation) {
      for (const person of assertBatchBody(request.body)) await this.assertPersonWrite(person);
      return;
    } else if (request.body && /^application\/([\w.-]+\+)?json\b/i.test(request.contentType ?? ''))
      parseCallerBody(request.body);
    const { type, id } = target;
    if (!type || !PEOPLE.has(type) || !id || target.operation || target.history) return;
    if (method === 'PUT' || method === 'DELETE') await this.assertPersonWrite({ method, type, id });
  }

  private async assertPersonWrite({ method, type, id }: PersonWrite): Promise<void> {
    // an update of an id the server does not have creates a person without an account (asked of the
    // server itself: a check of ours, not a read of the caller's to audit or to scope)
    if (method === 'PUT' && (await currentOrNone(this.upstream, type, id)) === undefined)
      throw refuse(`Create a ${type} with POST /fhir/${type}: it provisions their account.`);
    const role = roleLinkedTo(type);
    if (method === 'DELETE' && role && (await findUserByFhirResource(this.db, role, id)))
      throw new AppError('conflict', {
        detail: `An account is linked to ${type}/${id}: the record stays while the account exists.`,
      });
  }

  // --- patients and practitioners: read inside the scope; practitioners also write there ---

  private async scoped(method: string, target: FhirTarget, request: PassRequest): Promise<PassResponse> {
    const type = assertScopedInteraction(method, target, this.fhir.scope.kind, {
      query: request.query,
      ifNoneExist: request.headers['if-none-exist'],
    });
    const { id } = target;

    if (method === 'GET') {
      if (target.compartmentType && id) {
        const query = compartmentSearchQuery(type, id, request.query);
        return this.search(type, query, query.toString());
      }
      if (!id) return this.search(type, request.query, request.rawQuery);
      if (target.history && !target.versionId) return this.history(target, request);
      const subset = readSubset(type, request.query);
      if (target.versionId)
        return this.render(subsetted(await this.fhir.vread(type, id, target.versionId), subset));
      const conditional = {
        ifNoneMatch: request.headers['if-none-match'],
        ifModifiedSince: request.headers['if-modified-since'],
      };
      return this.render(subsetted(await this.fhir.read(type, id, conditional), subset));
    }
    assertJsonBody(request.contentType);
    const body = parseResource(request.body);
    const written =
      method === 'PUT' && id
        ? await this.fhir.update(type, id, body, request.headers['if-match'])
        : await this.fhir.create(type, body);
    return this.render({ ...written, body: preferredBody(request.headers.prefer, written.body) });
  }

  /** POST [type]/_search: the form body is the query (any role; the scope narrows it as for GET). */
  private async searchPost(target: FhirTarget, request: PassRequest): Promise<PassResponse> {
    if (request.method.toUpperCase() !== 'POST')
      throw new AppError('method_not_allowed', { headers: { Allow: 'POST' } });
    if (!target.type) {
      // POST /fhir/_search: a system-level search, refused to scoped roles as its GET is
      if (this.fhir.scope.kind !== 'all')
        assertScopedInteraction('GET', target, this.fhir.scope.kind, request);
      throw refuse('Search one type with POST /fhir/{type}/_search, or all types with GET /fhir?_type=...');
    }
    if (!/^application\/x-www-form-urlencoded\b/i.test(request.contentType ?? ''))
      throw new AppError('unsupported_media_type', {
        detail: 'Send a search form as application/x-www-form-urlencoded.',
      });
    const form = new URLSearchParams(request.body ?? '');
    // the form may carry what the URL may: `_format` and `_pretty` (dropped when they mean JSON), `_count`
    const query = jsonOnly(new URLSearchParams([...request.query, ...form]), request.headers.accept);
    assertCountReadable(query);
    // the URL's query was checked with the request target (middleware/requestTarget.ts), the form is here
    if (!isWellFormedQuery(request.body ?? ''))
      throw new AppError('validation_failed', {
        errors: [{ path: 'body', message: 'must be UTF-8, with every % followed by two hex digits' }],
      });
    // the URL's parameters and the form's become one query upstream: capped as one
    assertQuerySize(`${request.rawQuery}&${request.body ?? ''}`, query);
    return this.search(target.type ?? '', query, query.toString());
  }

  /** `asked`: the query as the client gave it, for the `self` link (R4 search: the parameters of the search). */
  private async search(type: string, query: URLSearchParams, asked: string): Promise<PassResponse> {
    const self = this.at(type, asked);
    return this.renderPage(await this.fhir.search(type, query, PASSTHROUGH_ROUTE), type, self);
  }

  private async history(target: FhirTarget, request: PassRequest): Promise<PassResponse> {
    const path = historyPath(target);
    const page = await this.fhir.history(target, request.query, PASSTHROUGH_ROUTE);
    return this.renderPage(page, path, this.at(path, request.rawQuery));
  }

  /** The gateway's URL of `path` ('' for the base) with `query`. */
  private at(path: string, query: string): string {
    const base = path ? `${this.publicBase}/${path}` : this.publicBase;
    return query ? `${base}?${query}` : base;
  }

  /**
   * `?_cursor=` (plus what client libraries add to a next link: `_count`, `_format`) with GET where
   * it was issued: on the searched type, or on the record whose history it pages.
   */
  private async page(target: FhirTarget, request: PassRequest, cursor: string): Promise<PassResponse> {
    const history = isHistory(target);
    if (
      (target.id && !history) ||
      target.operation ||
      (target.history && !history) ||
      request.method.toUpperCase() !== 'GET'
    )
      throw new AppError('validation_failed', {
        errors: [
          {
            path: '_cursor',
            message: 'is used with GET where it was issued: the type searched or the history paged',
          },
        ],
      });
    cursorCompanions(request.query);
    const path = history ? historyPath(target) : (target.type ?? '');
    const page = history
      ? await this.fhir.historyPage(cursor, target, PASSTHROUGH_ROUTE)
      : await this.fhir.page(cursor, path, PASSTHROUGH_ROUTE);
    return this.renderPage(page, path, cursorUrl(this.publicBase, path, cursor));
  }

  // --- rendering: nothing of the upstream leaves ---

  /**
   * `path`: where the page's cursors are used, the searched type or a `_history` ('' for the base);
   * `self`: the gateway's URL of this very page.
   */
  private renderPage(page: SearchPage, path: string, self: string): PassResponse {
    const link = [
      { relation: 'self', url: self },
      ...page.links.map((l: PageLink) => ({
        relation: l.relation,
        url: cursorUrl(this.publicBase, path, l.cursor),
      })),
    ];
    // the upstream's text with our links, when the check kept the Bundle whole; else serialise what was kept
    const relayed = page.text === undefined ? undefined : withLinks(page.text, link, page.upstreamLinked);
    if (relayed !== undefined) return this.answer(200, {}, relayed);
    const bundle: Bundle = { ...page.bundle, ...(link.length > 0 ? { link } : {}) };
    return this.answer(200, {}, upstreamJson(bundle));
  }

  /** `operationAnswer`: the body is what an operation returns (`$validate` answers its verdict as an OperationOutcome). */
  private render(result: FhirResult, operationAnswer = false): PassResponse {
    const body = result.body as Resource | undefined;
    if (body === undefined)
      return {
        status: result.status,
        headers: this.relayHeaders(result.status, result.headers),
        body: undefined,
      };
    // an upstream OperationOutcome (e.g. after a delete) carries its own diagnostics: answer with ours
    if (body.resourceType === 'OperationOutcome' && !operationAnswer)
      return this.answer(result.status, result.headers, JSON.stringify(successOutcome()));
    // so does every entry of a batch or transaction answer (HAPI: "HAPI-0420: Can not update ...")
    if (isBatchAnswer(body)) {
      // HAPI names the answer Bundle itself (`Location: .../Bundle/<uuid>`), a record no one can read
      const { location: _l, 'content-location': _c, ...headers } = result.headers;
      return this.answer(result.status, headers, upstreamJson(withOurOutcomes(body)));
    }
    return this.answer(result.status, result.headers, result.text ?? upstreamJson(body));
  }

  /** The answer with every upstream base URL in it replaced by the gateway's. */
  private answer(
    status: number,
    upstreamHeaders: Readonly<Record<string, string>>,
    text: string,
  ): PassResponse {
    return {
      status,
      headers: this.relayHeaders(status, upstreamHeaders),
      body: replaceUpstreamBase(text, this.upstreamBase, this.publicBase),
    };
  }

  private relayHeaders(status: number, upstream: Readonly<Record<string, string>>): Record<string, string> {
    const headers: Record<string, string> = { 'Content-Type': FHIR_JSON };
    if (upstream.etag) headers.ETag = upstream.etag;
    if (upstream['last-modified']) headers['Last-Modified'] = upstream['last-modified'];
    for (const name of ['location', 'content-location'] as const) {
      const value = upstream[name];
      const relative = value ? relativeToBase(value, this.upstreamBase) : undefined;
      if (relative)
        headers[name === 'location' ? 'Location' : 'Content-Location'] = `${this.publicBase}/${relative}`;
    }
    // a create says where the record is (R4 http.html#update: an update that creates is one);
    // HAPI answers a PUT that creates with Content-Location alone
    if (status === 201 && !headers.Location && headers['Content-Location'])
      headers.Location = headers['Content-Location'];
    return headers;
  }
}

function isBatchAnswer(resource: Resource): resource is Bundle {
  return resource.resourceType === 'Bundle' && /^(batch|transaction)-response$/.test(resource.type ?? '');
}

/** A caller's resource body: a JSON object, sent upstream as the text it came as (parseCallerBody). */
function parseResource(body: string | undefined): CallerBody<Resource> {
  const parsed = parseCallerBody(body);
  const { resource } = parsed;
  if (!resource || typeof resource !== 'object' || Array.isArray(resource))
    throw new AppError('invalid_json');
  return parsed as CallerBody<Resource>;
}

const FHIR_METHODS: ReadonlySet<string> = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);
const FHIR_ALLOW = 'GET, HEAD, POST, PUT, PATCH, DELETE';

/** Handles one /fhir request through the caller's scoped FHIR access. */
export function passthrough(deps: AppDeps, fhir: ScopedFhir, request: PassRequest): Promise<PassResponse> {
  return new Passthrough(deps, fhir).handle(request);
}

/** A history (a record's, a type's or the server's), not a version read: it pages with cursors. */
function isHistory(target: FhirTarget): boolean {
  return !!(target.history && !target.versionId && !target.operation);
}

/**
 * What the FHIR server answered, written out again: JSON.parse reads a body nested thousands deep,
 * JSON.stringify overflows the call stack on it (a 500): the server's garbage is a 502.
 */
function upstreamJson(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch (error) {
    if (error instanceof RangeError) throw unexpectedUpstreamBody('a body nested too deep to write out');
    throw error;
  }
}
