import { mkdirSync } from 'node:fs';
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { badRequest, getStatus, isResourceType, notFound } from '@medplum/core';
import type { FhirRequest, HttpMethod } from '@medplum/fhir-router';
import { FhirRouter } from '@medplum/fhir-router';
import type { OperationOutcome, Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../definitions.js';
import { buildCapabilityStatement, buildCapabilitySummary } from './capability.js';
import { applyElements, parseElements } from './elements.js';
import { ResourceJournal } from './journal.js';
import { type IdStyle, JournaledMemoryRepository } from './repository.js';

export interface EmbeddedFhirServer {
  /** Absolute FHIR base URL without a trailing slash, e.g. `http://127.0.0.1:41234/fhir/R4`. */
  readonly baseUrl: string;
  /** Stops listening, drops open connections and closes the journal. */
  close(): Promise<void>;
}

export interface EmbeddedFhirOptions {
  /** Directory for `fhir-store.sqlite`; created if missing. */
  dataDir: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: an ephemeral port. */
  port?: number;
  /** Default `/fhir/R4`. */
  basePath?: string;
  /** Default `uuid`; `numeric` names resources 1, 2, 3 ... and versions 1, 2, 3 ... like HAPI FHIR. */
  idStyle?: IdStyle;
  log?: (msg: string, extra?: Record<string, unknown>) => void;
}

const JOURNAL_FILE = 'fhir-store.sqlite';
const MAX_BODY_BYTES = 5 * 1024 * 1024;
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const JSON_MEDIA_TYPES = new Set([
  'application/json',
  'application/fhir+json',
  'application/json-patch+json',
]);
const FORM_MEDIA_TYPE = 'application/x-www-form-urlencoded';
const ROUTED_METHODS = new Set<string>(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);

interface ServerContext {
  readonly baseUrl: string;
  /** Listening on loopback: a request's `Host` must name loopback too (isLoopbackOrigin). */
  readonly loopback: boolean;
  readonly basePath: string;
  readonly router: FhirRouter;
  readonly repo: JournaledMemoryRepository;
  /** The CapabilityStatement, whole or as `_summary=true` asks; each made on its first request. */
  readonly capabilityStatement: (summary: boolean) => Resource;
  readonly serialize: <T>(task: () => Promise<T>) => Promise<T>;
  readonly log: (msg: string, extra?: Record<string, unknown>) => void;
}

/** Thrown for an answer the HTTP adapter gives without the FHIR router (413, 415, 404 ...). */
class HttpAnswer extends Error {
  constructor(
    readonly status: number,
    readonly outcome: OperationOutcome,
  ) {
    super(outcome.issue?.[0]?.details?.text ?? `HTTP ${status}`);
  }
}

/**
 * Starts a FHIR R4 server on loopback HTTP: Medplum's FhirRouter over a MemoryRepository that
 * journals every write to `${dataDir}/fhir-store.sqlite` and replays it at start. Used by the
 * gateway when no external FHIR server is configured, and by tests.
 * @see https://hl7.org/fhir/R4/http.html
 */
export async function startEmbeddedFhirServer(opts: EmbeddedFhirOptions): Promise<EmbeddedFhirServer> {
  const log = opts.log ?? (() => {});
  const basePath = normalizeBasePath(opts.basePath ?? '/fhir/R4');
  await loadFhirDefinitions();
  mkdirSync(opts.dataDir, { recursive: true });
  const journal = ResourceJournal.open(join(opts.dataDir, JOURNAL_FILE));
  const server = createServer();
  try {
    const origin = await listen(server, opts.host ?? '127.0.0.1', opts.port ?? 0);
    const baseUrl = `${origin}${basePath}`;
    const repo = await JournaledMemoryRepository.restore(journal, baseUrl, opts.idStyle);
    const context: ServerContext = {
      baseUrl,
      loopback: isLoopbackOrigin(origin),
      basePath,
      router: new FhirRouter(),
      repo,
      capabilityStatement: capabilityStatements(baseUrl, new Date()),
      serialize: createSerialQueue(),
      log,
    };
    server.on('request', (req, res) => void handleRequest(context, req, res));
    return { baseUrl, close: once(() => closeServer(server, journal)) };
  } catch (err) {
    await closeServer(server, journal);
    throw err;
  }
}

/**
 * Both statements, dated at the server's start and each made once, on its first request: the
 * gateway's readiness probes ask only for the summary, so a start never collects the search
 * parameters of every type (15–20 ms) unless a client asks for the whole statement.
 */
function capabilityStatements(baseUrl: string, startedAt: Date): (summary: boolean) => Resource {
  let whole: Resource | undefined;
  let summary: Resource | undefined;
  return (asSummary) => {
    if (asSummary) {
      summary ??= buildCapabilitySummary(baseUrl, startedAt);
      return summary;
    }
    whole ??= buildCapabilityStatement(baseUrl, startedAt);
    return whole;
  };
}

async function handleRequest(
  context: ServerContext,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  try {
    const { status, body, headers } = await answer(context, req);
    send(res, status, body, headers);
  } catch (err) {
    if (err instanceof HttpAnswer) {
      send(res, err.status, err.outcome, err.status === 413 ? { connection: 'close' } : {});
      return;
    }
    // Never echo internals to the client: log them, answer a generic 500.
    context.log('embedded FHIR server request failed', {
      error: err instanceof Error ? err.stack : String(err),
    });
    send(res, 500, outcome('exception', 'Internal server error'), {});
  }
}

interface Answer {
  status: number;
  /** Undefined for 304 Not Modified, which has no body. */
  body: Resource | undefined;
  headers: Record<string, string>;
}

/**
 * The server has no authentication: loopback is its guard, and a browser on the same machine gets
 * past loopback. Refused (403): a request a web page made (it carries `Origin`, or a
 * `Sec-Fetch-Site` other than `none`; a no-cors POST of a typeless Blob needs no preflight), and a
 * request to another host name (`Host` of a DNS-rebound name reads through a page's own origin).
 * The gateway's undici client sends neither header and the address it was given.
 */
function assertNotFromABrowser(req: IncomingMessage, loopback: boolean): void {
  const site = req.headers['sec-fetch-site'];
  if (req.headers.origin !== undefined || (site !== undefined && site !== 'none'))
    throw new HttpAnswer(403, outcome('forbidden', 'Requests from web pages are not served here'));
  if (loopback && !isLoopbackName((req.headers.host ?? '').toLowerCase().replace(/:\d+$/, '')))
    throw new HttpAnswer(403, outcome('forbidden', 'Unknown host'));
}

/** A name of loopback: a `Host` naming anything else reached a loopback server through DNS rebinding. */
function isLoopbackName(hostname: string): boolean {
  return (
    hostname === 'localhost' || hostname === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname)
  );
}

/**
 * Whether the server listens on loopback, where a `Host` must name loopback; a server bound
 * elsewhere on purpose (a container network reaches it by a service name) takes any.
 */
function isLoopbackOrigin(origin: string): boolean {
  return isLoopbackName(new URL(origin).hostname);
}

async function answer(context: ServerContext, req: IncomingMessage): Promise<Answer> {
  assertNotFromABrowser(req, context.loopback);
  const url = new URL(req.url ?? '/', 'http://embedded.invalid'); // only the path and query are used
  const path = pathBelowBase(url.pathname, context.basePath);
  const method = req.method ?? 'GET';
  if (path === undefined) {
    throw new HttpAnswer(404, notFound);
  }
  if (!ROUTED_METHODS.has(method)) {
    throw new HttpAnswer(405, outcome('not-supported', `Method ${method} is not supported`));
  }
  const rawBody = await readBody(req, MAX_BODY_BYTES);
  if (path === 'metadata' && method === 'GET') {
    const summary = url.searchParams.get('_summary') === 'true';
    return { status: 200, body: context.capabilityStatement(summary), headers: {} };
  }
  assertRoutable(method, path);
  const request: FhirRequest = {
    method: method as HttpMethod,
    url: path,
    pathname: '', // FhirRouter derives it from url and refuses a preset one
    params: {},
    query: queryRecord(url.searchParams),
    body: parseBody(rawBody, req.headers['content-type'], method, path, url.searchParams),
    headers: req.headers,
    config: { transactions: true }, // without it a transaction Bundle is processed like a batch
  };
  const [result, routed] = await context.serialize(() => context.router.handleRequest(request, context.repo));
  // FhirRouter answers 200 to every PUT; FHIR wants 201 (and a Location) when the PUT created the resource.
  const status = method === 'PUT' && routed && context.repo.isCreation(routed) ? 201 : getStatus(result);
  const isRead = method === 'GET' && path.split('/').length === 2;
  if (isRead && status === 200 && routed && notModified(req.headers, routed)) {
    return { status: 304, body: undefined, headers: versionHeaders(context.baseUrl, 304, routed) };
  }
  const elements = parseElements(elementValues(method, path, request));
  const [searchedType = ''] = path.split('/');
  const resource =
    routed && elements && status === 200 ? applyElements(routed, searchedType, elements) : routed;
  return toAnswer(context.baseUrl, status, result, resource);
}

/**
 * Conditional read (https://hl7.org/fhir/R4/http.html#cread): the client's copy is current.
 * If-None-Match compares weakly (RFC 9110 section 8.8.3.2, `W/"3"` matches version 3; `*` matches
 * any); If-Modified-Since counts only without it (RFC 9110 section 13.1.3), to the second.
 */
function notModified(headers: IncomingHttpHeaders, resource: Resource): boolean {
  const { versionId, lastUpdated } = resource.meta ?? {};
  const ifNoneMatch = headers['if-none-match'];
  if (ifNoneMatch !== undefined) {
    const opaque = (tag: string) =>
      tag
        .trim()
        .replace(/^W\//, '')
        .replace(/^"(.*)"$/, '$1');
    return ifNoneMatch
      .split(',')
      .some((tag) => tag.trim() === '*' || (!!versionId && opaque(tag) === versionId));
  }
  const since = Date.parse(headers['if-modified-since'] ?? '');
  if (Number.isNaN(since) || !lastUpdated) return false;
  return Math.floor(Date.parse(lastUpdated) / 1000) * 1000 <= since;
}

/** The `_elements` values of a GET (read, vread, search) or of a POST _search's form and URL. */
function elementValues(method: string, path: string, request: FhirRequest): string[] {
  const source =
    method === 'GET'
      ? request.query
      : method === 'POST' && path.endsWith('/_search')
        ? request.body
        : undefined;
  const value = (source as Record<string, string | string[] | undefined> | undefined)?._elements;
  return value === undefined ? [] : [value].flat();
}

/** Rejects what FhirRouter would route but cannot answer truthfully, and unknown resource types. */
function assertRoutable(method: string, path: string): void {
  const [first = ''] = path.split('/');
  if (path === '') {
    if (method !== 'POST') {
      throw new HttpAnswer(400, badRequest('System-level search is not supported; search one resource type'));
    }
    return; // batch / transaction
  }
  if (path.split('/').some((segment) => segment.startsWith('$'))) {
    throw new HttpAnswer(
      404,
      outcome('not-supported', 'FHIR operations ($...) are not supported by this server'),
    );
  }
  if (!isResourceType(first)) {
    throw new HttpAnswer(404, outcome('not-found', `Unknown resource type or operation: ${first}`));
  }
  // `Patient/1/Observation`: the router answers 404 for a record that exists (HAPI's build here: 400)
  const [, id, third] = path.split('/');
  if (id && third && third !== '_history' && isResourceType(third)) {
    throw new HttpAnswer(
      400,
      outcome('not-supported', 'Compartment searches are not supported by this server; search the type'),
    );
  }
}

function toAnswer(
  baseUrl: string,
  status: number,
  result: OperationOutcome,
  resource: Resource | undefined,
): Answer {
  if (!resource) {
    return { status, body: result, headers: {} };
  }
  if (resource.resourceType === 'Bundle') {
    addFullUrls(resource, baseUrl);
  }
  return { status, body: resource, headers: versionHeaders(baseUrl, status, resource) };
}

/** ETag and Last-Modified for a resource version; Location for a 201. */
function versionHeaders(baseUrl: string, status: number, resource: Resource): Record<string, string> {
  const { versionId, lastUpdated } = resource.meta ?? {};
  if (!versionId || resource.resourceType === 'Bundle') {
    return {};
  }
  const headers: Record<string, string> = { etag: `W/"${versionId}"` };
  if (lastUpdated) {
    headers['last-modified'] = new Date(lastUpdated).toUTCString();
  }
  if (status === 201) {
    headers.location = `${baseUrl}/${resource.resourceType}/${resource.id}/_history/${versionId}`;
  }
  return headers;
}

/** Every Bundle entry that carries a resource with an id gets `fullUrl = {base}/{Type}/{id}`. */
function addFullUrls(bundle: Resource & { resourceType: 'Bundle' }, baseUrl: string): void {
  for (const entry of bundle.entry ?? []) {
    if (!entry.fullUrl && entry.resource?.id) {
      entry.fullUrl = `${baseUrl}/${entry.resource.resourceType}/${entry.resource.id}`;
    }
  }
}

function parseBody(
  raw: Buffer,
  contentType: string | undefined,
  method: string,
  path: string,
  query: URLSearchParams,
): unknown {
  const mediaType = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  const isPostSearch = method === 'POST' && path.endsWith('/_search');
  if (isPostSearch) {
    // POST [type]/_search: parameters may come in the form body and in the URL alike.
    const form =
      mediaType === FORM_MEDIA_TYPE ? new URLSearchParams(raw.toString('utf8')) : new URLSearchParams();
    return queryRecord(new URLSearchParams([...query, ...form]));
  }
  if (raw.length === 0) {
    return undefined;
  }
  // a body must say it is JSON: a typeless body is what a web page can send without a preflight
  if (!JSON_MEDIA_TYPES.has(mediaType)) {
    throw new HttpAnswer(415, outcome('not-supported', `Unsupported content type: ${mediaType || 'none'}`));
  }
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    throw new HttpAnswer(400, badRequest('Malformed JSON in request body'));
  }
}

/** Repeated query parameters become arrays, as FhirRouter and parseSearchRequest expect. */
function queryRecord(params: URLSearchParams): Record<string, string | string[]> {
  const record: Record<string, string | string[]> = Object.create(null);
  for (const key of new Set(params.keys())) {
    const values = params.getAll(key);
    record[key] = values.length === 1 ? (values[0] ?? '') : values;
  }
  return record;
}

/** Reads the body up to `limit` bytes; beyond that answers 413 and discards the rest. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (Number(req.headers['content-length'] ?? 0) > limit) {
      req.resume(); // drain so the client can read our answer before the connection closes
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        req.resume();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
    // After 'end' this is a no-op; before it, the client went away mid-body.
    req.once('close', () => reject(new Error('request closed before its body was read')));
  });
}

function tooLarge(): HttpAnswer {
  return new HttpAnswer(413, outcome('too-costly', `Request body exceeds ${MAX_BODY_BYTES} bytes`));
}

function send(
  res: ServerResponse,
  status: number,
  body: Resource | undefined,
  headers: Record<string, string>,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (body === undefined) {
    res.writeHead(status, headers);
    res.end();
    return;
  }
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': FHIR_JSON,
    'content-length': Buffer.byteLength(payload),
  });
  res.end(payload);
}

function outcome(code: string, text: string): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code, details: { text } }],
  } as OperationOutcome;
}

/** `/fhir/R4/Patient/1` -> `Patient/1`; `/fhir/R4` -> ``; a path outside the base -> undefined. */
function pathBelowBase(pathname: string, basePath: string): string | undefined {
  if (pathname === basePath || pathname === `${basePath}/`) {
    return '';
  }
  if (!pathname.startsWith(`${basePath}/`)) {
    return undefined;
  }
  return pathname.slice(basePath.length + 1).replace(/\/+$/, '');
}

function normalizeBasePath(basePath: string): string {
  const trimmed = basePath.replace(/\/+$/, '');
  return trimmed.startsWith('/') || trimmed === '' ? trimmed : `/${trimmed}`;
}

function listen(server: Server, host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const address = server.address() as AddressInfo;
      const hostPart = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      resolve(`http://${hostPart}:${address.port}`);
    });
  });
}

async function closeServer(server: Server, journal: ResourceJournal): Promise<void> {
  if (server.listening) {
    const closed = new Promise<void>((resolve, reject) =>
      server.close((err) => (err ? reject(err) : resolve())),
    );
    server.closeAllConnections(); // keep-alive clients would otherwise hold close() open
    await closed;
  }
  journal.close();
}

/**
 * Runs tasks one after another. The repository relies on it: a transaction that fails rebuilds
 * memory from the journal, which must not happen while another request is half-way through.
 */
function createSerialQueue(): <T>(task: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(task: () => Promise<T>) => {
    const run = tail.then(task, task);
    tail = run.catch(() => undefined);
    return run;
  };
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let result: Promise<void> | undefined;
  return () => {
    result ??= fn();
    return result;
  };
}
