import type { Bundle, CapabilityStatement, Resource } from '@medplum/fhirtypes';
import { Pool, request as undiciRequest } from 'undici';
import type { Config } from '../config.js';
import { AppError } from '../errors.js';
import { FHIR_ID_PATTERN, FHIR_ID_SOURCE } from '../http/schemas.js';
import type { Metrics, UpstreamFailure } from '../metrics/metrics.js';
import { withinMs } from './boundedCalls.js';
import { type HistoryOf, historyPath } from './fhirPath.js';
import { isPlainPath, relativeToBase } from './links.js';
import {
  isUpstreamSuccess,
  searchInteraction,
  type UpstreamInteraction,
  unexpectedUpstreamBody,
  upstreamStatusError,
} from './upstreamStatus.js';

/**
 * The only code that talks to the FHIR server. Typed interactions (read, search, create, ...)
 * that either return what the interaction promises or throw one AppError, chosen by the one
 * status mapping in upstreamStatus.ts: 502 when the server fails or answers garbage, 504 when
 * it does not answer in time. Public texts never carry the upstream URL, headers or
 * diagnostics. The upstream credential is the gateway's own: a caller's JWT is never forwarded.
 */

export type FhirMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface FhirRequest {
  readonly method: FhirMethod;
  /** Relative to the base, already validated by the caller: `Patient/123`, `metadata`, `Observation`. */
  readonly path: string;
  readonly query?: URLSearchParams;
  readonly body?: unknown;
  readonly headers?: Readonly<Record<string, string>>;
  readonly timeoutMs?: number;
}

export interface FhirResult<T = unknown> {
  /** A success: 2xx, or 304 for a conditional read. */
  readonly status: number;
  /** Lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
  /** The parsed JSON body; undefined when empty (304, 204, `Prefer: return=minimal`). */
  readonly body: T | undefined;
  /** The body as the server sent it: relayed as is when nothing in it changed (no second serialisation). */
  readonly text?: string;
}

export interface ConditionalRead {
  readonly ifNoneMatch?: string | undefined;
  readonly ifModifiedSince?: string | undefined;
}

export interface FhirService {
  /**
   * The configured base URL: rewritten out of responses, and the one base on which an absolute
   * reference in a record is the server's own (compartment.ts); never sent to a client.
   */
  readonly baseUrl: string;
  /** A resource of `type` (200) or, for a conditional read, 304 without a body. */
  read<T extends Resource = Resource>(
    type: string,
    id: string,
    options?: ConditionalRead,
  ): Promise<FhirResult<T>>;
  vread<T extends Resource = Resource>(type: string, id: string, versionId: string): Promise<FhirResult<T>>;
  history(of: HistoryOf, params?: URLSearchParams): Promise<FhirResult<Bundle>>;
  /** A searchset Bundle; `type` '' searches the whole server. */
  search<T extends Resource = Resource>(
    type: string,
    params: URLSearchParams,
  ): Promise<FhirResult<Bundle<T>>>;
  /** A page of a search the server linked to: a path and query relative to the base (see links.ts). */
  page<T extends Resource = Resource>(relativeLink: string): Promise<FhirResult<Bundle<T>>>;
  /** 201 created, or 200 when `ifNoneExist` found the resource already there (FHIR conditional create). */
  /** `text`: the caller's text of `resource`, sent instead of serialising it again (negotiation.ts, parseCallerBody). */
  create<T extends Resource>(
    type: string,
    resource: T,
    options?: { ifNoneExist?: string; text?: string },
  ): Promise<Written<T>>;
  update<T extends Resource>(
    type: string,
    id: string,
    resource: T,
    options?: { ifMatch?: string | undefined; text?: string },
  ): Promise<Written<T>>;
  /** Deleting a missing or deleted resource counts as done. */
  delete(type: string, id: string): Promise<void>;
  /** `summary`: the CapabilityStatement's summary only (HAPI's full one is 1.5 MB, ~1 s to build). */
  capabilities(options?: { timeoutMs?: number; summary?: boolean }): Promise<CapabilityStatement>;
  /**
   * Any other interaction, as an admin's passthrough request sends it (operations, batch, PATCH,
   * conditional writes). Failures are mapped like every typed call (a deleted resource is 410
   * here, for the admin); the body is not checked.
   */
  forward(request: FhirRequest): Promise<FhirResult>;
  close(): Promise<void>;
}

/** A create or update: the stored resource when the server returned it, and its id and version either way. */
export interface Written<T> extends FhirResult<T> {
  readonly id: string;
  readonly versionId: string | undefined;
}

/** Largest upstream body we buffer; beyond it the answer is a 502 rather than unbounded memory. */
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;
/** A client-credentials token is renewed after this share of its lifetime, at most a minute before it ends. */
const TOKEN_RENEW_SHARE = 0.75;
const TOKEN_RENEW_MAX_MARGIN_MS = 60_000;
/** `Patient/12` or `Patient/12/_history/3`, relative to the FHIR base. */
const VERSIONED_LOCATION = new RegExp(
  String.raw`^([A-Za-z]+)\/(${FHIR_ID_SOURCE})(?:\/_history\/([A-Za-z0-9\-.]{1,64}))?\/?$`,
);

type UpstreamAuth = Config['fhir']['auth'];

export interface FhirServiceOptions {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  /** Connections to the FHIR server (default 32); a call beyond them waits for one, within its timeout. */
  readonly maxConnections?: number;
  readonly auth: UpstreamAuth;
  /** Records each exchange's latency and failures (src/metrics/); absent when metrics are off. */
  readonly metrics?: Pick<Metrics, 'upstream'>;
}

/** The failure an exchange ended in, for the metrics: a bounded label, never a message. */
function failureOf(error: unknown): UpstreamFailure {
  if (!(error instanceof AppError)) return 'error';
  if (error.code === 'upstream_timeout') return 'timeout';
  if (error.code === 'upstream_unavailable') return 'unreachable';
  return error.code === 'upstream_error' ? 'bad_response' : 'error';
}

/** Connections to the FHIR server per serving process, unless told (FHIR_MAX_CONNECTIONS). */
const POOL_CONNECTIONS = 32;

/** Maps a transport failure to the typed error a client sees; the cause stays in our logs. */
function transportError(error: unknown): AppError {
  const name = (error as { name?: string })?.name;
  const code = (error as { code?: string })?.code;
  const timedOut =
    name === 'TimeoutError' ||
    name === 'AbortError' ||
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT' ||
    code === 'UND_ERR_CONNECT_TIMEOUT';
  return new AppError(timedOut ? 'upstream_timeout' : 'upstream_unavailable', { cause: error });
}

type UpstreamAnswer = Awaited<ReturnType<Pool['request']>>;

function tooLarge(): AppError {
  return new AppError('upstream_error', { cause: new Error('upstream body too large') });
}

/**
 * The body as text, refused past MAX_RESPONSE_BYTES. A body of declared length is read by undici
 * in one piece (about half the CPU of streaming a 26 KB Bundle through an async iterator); HTTP
 * framing stops it at that length. A body without one is counted as it streams.
 */
async function readBody(answer: Pick<UpstreamAnswer, 'headers' | 'body'>): Promise<string> {
  const declared = answer.headers['content-length'];
  if (typeof declared === 'string' && /^\d+$/.test(declared)) {
    if (Number(declared) > MAX_RESPONSE_BYTES) {
      answer.body.destroy();
      throw tooLarge();
    }
    return answer.body.text();
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of answer.body) {
    size += chunk.byteLength;
    if (size > MAX_RESPONSE_BYTES) throw tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * readBody, cut off at `deadline` (a performance.now() time): undici's bodyTimeout only bounds
 * the pause between two chunks, so a server that drips a byte now and then would hold the
 * request, and the caller, for as long as it likes.
 */
async function readBodyBy(
  answer: Pick<UpstreamAnswer, 'headers' | 'body'>,
  deadline: number,
): Promise<string> {
  const timer = setTimeout(() => answer.body.destroy(bodyDeadlineError()), deadline - performance.now());
  try {
    return await readBody(answer);
  } finally {
    clearTimeout(timer);
  }
}

function bodyDeadlineError(): Error {
  return Object.assign(new Error('the FHIR server did not finish its answer in time'), {
    name: 'TimeoutError',
  });
}

function parseJson(text: string): unknown {
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new AppError('upstream_error', { cause: error });
  }
}

/**
 * A success's body: empty, or a JSON object (`null`, a list or a number is garbage: 502). Which
 * resource it must be is the interaction's to check; `{}` passes here (Google's FHIR store
 * answers a delete with it). A Bundle's structure is checked for every interaction alike.
 */
function parseResource(text: string): unknown {
  const parsed = parseJson(text);
  if (parsed === undefined) return undefined;
  if (!isObject(parsed)) throw unexpectedUpstreamBody('a body that is not a JSON object');
  if (!hasReadableId(parsed)) throw unexpectedUpstreamBody('a resource whose id is not a FHIR id');
  if (parsed.resourceType === 'Bundle') assertBundleShape(parsed);
  return parsed;
}

/**
 * A resource's `meta.versionId` when it is a FHIR id, else undefined (no version known): it goes
 * into our ETag and Location headers, where a newline or a character past Latin-1 from the
 * server threw after a write was done and stored.
 */
export function versionIdOf(resource: Resource | undefined): string | undefined {
  const versionId: unknown = resource?.meta?.versionId;
  return typeof versionId === 'string' && FHIR_ID_PATTERN.test(versionId) ? versionId : undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Absent, or a list whose every item is an object that passes `check`. */
function isListOf(value: unknown, check: (item: Record<string, unknown>) => boolean): boolean {
  if (value === undefined) return true;
  if (!Array.isArray(value)) return false;
  for (const item of value) if (!isObject(item) || !check(item)) return false;
  return true;
}

/** Absent, or a FHIR id: an id that is not one would reach our paths, cursors and audit rows as it is. */
const hasReadableId = (resource: Record<string, unknown>) =>
  resource.id === undefined || (typeof resource.id === 'string' && FHIR_ID_PATTERN.test(resource.id));

const isEntry = (entry: Record<string, unknown>) =>
  entry.resource === undefined ||
  (isObject(entry.resource) &&
    typeof entry.resource.resourceType === 'string' &&
    hasReadableId(entry.resource));
const isLink = (link: Record<string, unknown>) =>
  typeof link.url === 'string' && typeof link.relation === 'string';

/**
 * The Bundle's own structure, before anything reads it entry by entry: an `entry` or `link`
 * that is not a list of objects (or an entry's resource without a type or with an id that is
 * not a FHIR id) is garbage, a 502,
 * where it would otherwise fail as our own error (500) halfway through the response check.
 */
function assertBundleShape(bundle: Record<string, unknown>): void {
  if (!isListOf(bundle.entry, isEntry) || !isListOf(bundle.link, isLink))
    throw unexpectedUpstreamBody('a malformed Bundle');
}

/** Headers that hold one value: sent twice, neither can be believed (joined, the second went out unrewritten). */
const SINGLE_VALUED = new Set(['location', 'content-location', 'etag', 'last-modified', 'content-type']);

/** Headers that name a record: believed only on our own upstream (another server's could name anyone's). */
const LOCATIONS = ['location', 'content-location'] as const;

function flattenHeaders(
  headers: Record<string, string | string[] | undefined>,
  upstreamBase: string,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(headers)) {
    const name = key.toLowerCase();
    if (value === undefined) continue;
    if (!Array.isArray(value)) out[name] = value;
    else if (value.length === 1) out[name] = value[0] as string;
    else if (!SINGLE_VALUED.has(name)) out[name] = value.join(', ');
  }
  for (const name of LOCATIONS)
    if (out[name] !== undefined && relativeToBase(out[name], upstreamBase) === undefined) delete out[name];
  return out;
}

/** When to renew a token that lives `lifetimeMs`: a share of its life, so even a 30-second token is reused. */
export function tokenRenewDelayMs(lifetimeMs: number): number {
  return lifetimeMs - Math.min(TOKEN_RENEW_MAX_MARGIN_MS, lifetimeMs * (1 - TOKEN_RENEW_SHARE));
}

/** OAuth2 client credentials (RFC 6749 section 4.4): cached, renewed before expiry, one renewal at a time. */
function clientCredentialsTokenSource(
  auth: Extract<UpstreamAuth, { kind: 'client_credentials' }>,
  timeoutMs: number,
): { get(): Promise<string>; invalidate(): void } {
  let cached: { token: string; renewAt: number } | undefined;
  let inFlight: Promise<string> | undefined;

  const fetchToken = async (): Promise<string> => {
    const form = new URLSearchParams({ grant_type: 'client_credentials' });
    if (auth.scope) form.set('scope', auth.scope);
    const basic = Buffer.from(
      `${encodeURIComponent(auth.clientId)}:${encodeURIComponent(auth.clientSecret)}`,
    ).toString('base64');
    let response: Awaited<ReturnType<typeof undiciRequest>>;
    try {
      response = await undiciRequest(auth.tokenUrl, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
          authorization: `Basic ${basic}`,
        },
        body: form.toString(),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      throw transportError(error);
    }
    let text: string;
    try {
      text = await readBody(response);
    } catch (error) {
      // a body cut off or stalled past the timeout fails as the request would have (502/504), not as ours (500)
      throw error instanceof AppError ? error : transportError(error);
    }
    const json = parseJson(text) as { access_token?: unknown; expires_in?: unknown } | undefined;
    if (response.statusCode !== 200 || typeof json?.access_token !== 'string') {
      throw new AppError('upstream_unavailable', {
        cause: new Error(`token endpoint answered ${response.statusCode}`),
      });
    }
    const lifetimeMs = (typeof json.expires_in === 'number' ? json.expires_in : 300) * 1000;
    cached = { token: json.access_token, renewAt: Date.now() + tokenRenewDelayMs(lifetimeMs) };
    return json.access_token;
  };

  return {
    get: () => {
      if (cached && Date.now() < cached.renewAt) return Promise.resolve(cached.token);
      inFlight ??= fetchToken().finally(() => {
        inFlight = undefined;
      });
      return inFlight;
    },
    invalidate: () => {
      cached = undefined;
    },
  };
}

function resourceTypeOf(body: unknown): string | undefined {
  const type = (body as { resourceType?: unknown } | undefined)?.resourceType;
  return typeof type === 'string' ? type : undefined;
}

/** `W/"3"` or `"3"`: the version a write made, as its ETag names it (R4 http.html#versioning). */
const VERSION_TAG = /^(?:W\/)?"([A-Za-z0-9\-.]{1,64})"$/;

/**
 * The id and version of a written resource: from the body when returned, else from Location. An
 * update may answer with neither (R4 http.html#update asks only for ETag and Last-Modified; a
 * server answering `return=minimal` does so): its id is the one written to, its version the ETag's.
 * `id`: the record an update wrote to; undefined for a create.
 */
function writtenIdentity(
  type: string,
  result: FhirResult,
  upstreamBase: string,
  id?: string,
): { id: string; versionId: string | undefined } {
  const body = result.body as Resource | undefined;
  if (body !== undefined) {
    if (body.resourceType !== type || !body.id) throw unexpectedUpstreamBody(`a write without ${type}`);
    if (id !== undefined && body.id !== id)
      throw unexpectedUpstreamBody('an update answered with another record');
    return { id: body.id, versionId: versionIdOf(body) };
  }
  const named = result.headers.location ?? result.headers['content-location'];
  // only a Location on our own server names what was written: another server's could name anyone's record
  const location = VERSIONED_LOCATION.exec(relativeToBase(named ?? '', upstreamBase) ?? '');
  if (id !== undefined) {
    // an update wrote to `id`: a Location elsewhere (a server naming its public address) says nothing more
    if (location && (location[1] !== type || location[2] !== id))
      throw unexpectedUpstreamBody('an update answered with another record');
    return { id, versionId: location?.[3] ?? VERSION_TAG.exec(result.headers.etag ?? '')?.[1] };
  }
  if (!location || location[1] !== type || !location[2])
    throw unexpectedUpstreamBody('a write without a Location on the FHIR base');
  return { id: location[2], versionId: location[3] };
}

/** A write carrying If-Match is versioned: the upstream's conflict then means a stale version. */
function interactionOf(req: FhirRequest, otherwise: UpstreamInteraction = 'other'): UpstreamInteraction {
  return req.method !== 'GET' && req.headers?.['if-match'] ? 'versioned-write' : otherwise;
}

/** A resource of `type`; a 304 only when the read was conditional (else a confirming read would loop on it). */
function expectResource<T>(result: FhirResult, type: string, conditional = false): FhirResult<T> {
  if (result.status === 304) {
    if (!conditional) throw unexpectedUpstreamBody('304 to a read without a condition');
    return result as FhirResult<T>;
  }
  if (resourceTypeOf(result.body) !== type) throw unexpectedUpstreamBody(`a read without ${type}`);
  return asReadAnswer(result) as FhirResult<T>;
}

/** A read that answered the record is a 200, whatever other 2xx the server said (a 206, a 201 to a GET). */
export function asReadAnswer(result: FhirResult): FhirResult {
  return result.status === 200 ? result : { ...result, status: 200 };
}

function expectBundle<T>(result: FhirResult): FhirResult<T> {
  // a search that answers an OperationOutcome or anything but a Bundle with 2xx is broken, not empty
  if (resourceTypeOf(result.body) !== 'Bundle') throw unexpectedUpstreamBody('a search without a Bundle');
  return result as FhirResult<T>;
}

/** The record as the server has it now, or undefined when it has none (missing or deleted): a check of the gateway's own. */
export async function currentOrNone(
  fhir: FhirService,
  type: string,
  id: string,
): Promise<Resource | undefined> {
  try {
    return (await fhir.read(type, id)).body;
  } catch (error) {
    if (error instanceof AppError && error.code === 'not_found') return undefined;
    throw error;
  }
}

export function createFhirService(options: FhirServiceOptions): FhirService {
  const { metrics } = options;
  const base = new URL(options.baseUrl);
  const basePath = base.pathname.replace(/\/+$/, '');
  const upstreamBase = `${base.origin}${basePath}`;
  const connections = options.maxConnections ?? POOL_CONNECTIONS;
  const pool = new Pool(base.origin, {
    connections,
    keepAliveTimeout: 30_000,
    pipelining: 1,
  });
  let inFlight = 0;
  // set by close(): a call it cuts is the gateway stopping, not the FHIR server failing
  let closed = false;
  const sendFailure = (error: unknown) =>
    closed ? new AppError('not_ready', { cause: error }) : transportError(error);
  const oauth =
    options.auth.kind === 'client_credentials'
      ? clientCredentialsTokenSource(options.auth, options.timeoutMs)
      : undefined;

  /** The Authorization header, got by `deadline`: a token endpoint that hangs spends the call's own time, not a second timeout's. */
  const authorization = async (deadline: number): Promise<string | undefined> => {
    if (options.auth.kind === 'bearer') return `Bearer ${options.auth.token}`;
    // the fetch itself goes on past the deadline, for the next call
    if (oauth)
      return `Bearer ${await withinMs(oauth.get(), Math.max(0, deadline - performance.now()), 'no token in time')}`;
    return undefined;
  };

  /** One HTTP exchange, any status; the body is parsed (a body that is not JSON is a 502). */
  const send = async (req: FhirRequest, rawQuery?: string): Promise<FhirResult> => {
    // paths are built by our own code from validated parts; this guard keeps it that way
    if (!isPlainPath(req.path) || req.path.includes('?')) {
      throw new Error(`refusing unsafe FHIR path: ${req.path}`);
    }
    const query =
      rawQuery ?? (req.query && [...req.query.keys()].length > 0 ? `?${req.query.toString()}` : '');
    const headers: Record<string, string> = { accept: 'application/fhir+json', ...req.headers };
    const deadline = performance.now() + (req.timeoutMs ?? options.timeoutMs);
    const auth = await authorization(deadline);
    if (auth) headers.authorization = auth;
    let body: string | undefined;
    if (req.body !== undefined) {
      body = typeof req.body === 'string' ? req.body : JSON.stringify(req.body);
      headers['content-type'] ??= 'application/fhir+json';
    }
    // what is left of the call's time once the token is had (all of it without OAuth)
    const timeoutMs = Math.max(1, Math.ceil(deadline - performance.now()));
    // undici's timers start when a request is sent: one that must first wait for a connection
    // (all busy, e.g. behind a hung server) gets a signal bounding the wait too (a signal on every
    // call cost ~30 µs for what undici's timers do alone)
    const signal = inFlight >= connections ? AbortSignal.timeout(timeoutMs) : undefined;
    inFlight += 1;
    let response: Awaited<ReturnType<Pool['request']>>;
    let text: string;
    try {
      try {
        response = await pool.request({
          path: `${basePath}${req.path ? `/${req.path}` : ''}${query}`,
          method: req.method,
          headers,
          body,
          headersTimeout: timeoutMs,
          bodyTimeout: timeoutMs,
          ...(signal ? { signal } : {}),
        });
      } catch (error) {
        throw sendFailure(error);
      }
      try {
        text = await readBodyBy(response, deadline);
      } catch (error) {
        throw error instanceof AppError ? error : sendFailure(error);
      }
    } finally {
      inFlight -= 1;
    }
    const success = response.statusCode >= 200 && response.statusCode < 300;
    const parsed = success ? parseResource(text) : undefined;
    return {
      status: response.statusCode,
      headers: flattenHeaders(response.headers, upstreamBase),
      body: parsed,
      ...(success ? { text } : {}),
    };
  };

  /** send, renewing our OAuth token once on a 401, then the one status mapping. */
  const exchange = async (
    req: FhirRequest,
    rawQuery?: string,
    interaction: UpstreamInteraction = 'other',
  ): Promise<FhirResult> => {
    const started = metrics ? performance.now() : 0;
    let result: FhirResult;
    try {
      result = await send(req, rawQuery);
      if (result.status === 401 && oauth) {
        // the upstream may have revoked our token early: renew once and retry
        oauth.invalidate();
        result = await send(req, rawQuery);
      }
    } catch (error) {
      metrics?.upstream(req.method, failureOf(error), performance.now() - started);
      throw error;
    }
    metrics?.upstream(req.method, result.status, performance.now() - started);
    if (!isUpstreamSuccess(result.status))
      throw upstreamStatusError(result.status, interaction, {
        method: req.method,
        allow: result.headers.allow,
      });
    return result;
  };

  /** `id`: the record an update writes to (writtenIdentity). */
  const write = async <T extends Resource>(
    req: FhirRequest,
    type: string,
    id?: string,
  ): Promise<Written<T>> => {
    const result = await exchange(req, undefined, interactionOf(req));
    return { ...(result as FhirResult<T>), ...writtenIdentity(type, result, upstreamBase, id) };
  };

  return {
    baseUrl: upstreamBase,
    read: async (type, id, conditional = {}) => {
      const headers: Record<string, string> = {};
      if (conditional.ifNoneMatch) headers['if-none-match'] = conditional.ifNoneMatch;
      if (conditional.ifModifiedSince) headers['if-modified-since'] = conditional.ifModifiedSince;
      const answer = await exchange({ method: 'GET', path: `${type}/${id}`, headers });
      return expectResource(answer, type, !!(conditional.ifNoneMatch || conditional.ifModifiedSince));
    },
    vread: async (type, id, versionId) =>
      expectResource(await exchange({ method: 'GET', path: `${type}/${id}/_history/${versionId}` }), type),
    history: async (of, params = new URLSearchParams()) =>
      expectBundle(await exchange({ method: 'GET', path: historyPath(of), query: params })),
    search: async (type, params) =>
      expectBundle(
        await exchange({ method: 'GET', path: type, query: params }, undefined, searchInteraction(params)),
      ),
    page: async (relativeLink) => {
      if (!isPlainPath(relativeLink)) throw unexpectedUpstreamBody('an unsafe paging link');
      const index = relativeLink.indexOf('?');
      const path = index < 0 ? relativeLink : relativeLink.slice(0, index);
      const query = index < 0 ? '' : relativeLink.slice(index);
      return expectBundle(await exchange({ method: 'GET', path }, query, 'page'));
    },
    create: (type, resource, conditional = {}) =>
      write(
        {
          method: 'POST',
          path: type,
          body: conditional.text ?? resource,
          headers: conditional.ifNoneExist ? { 'if-none-exist': conditional.ifNoneExist } : {},
        },
        type,
      ),
    update: (type, id, resource, conditional = {}) =>
      write(
        {
          method: 'PUT',
          path: `${type}/${id}`,
          body: conditional.text ?? resource,
          headers: conditional.ifMatch ? { 'if-match': conditional.ifMatch } : {},
        },
        type,
        id,
      ),
    delete: async (type, id) => {
      try {
        await exchange({ method: 'DELETE', path: `${type}/${id}` });
      } catch (error) {
        if (!(error instanceof AppError && error.code === 'not_found')) throw error;
      }
    },
    capabilities: async ({ timeoutMs, summary } = {}) => {
      const result = await exchange({
        method: 'GET',
        path: 'metadata',
        ...(summary ? { query: new URLSearchParams({ _summary: 'true' }) } : {}),
        ...(timeoutMs ? { timeoutMs } : {}),
      });
      return expectResource<CapabilityStatement>(result, 'CapabilityStatement').body as CapabilityStatement;
    },
    forward: (req) => exchange(req, undefined, interactionOf(req, 'forwarded')),
    // by the time this runs the HTTP server has drained; whatever is still in flight (a mail
    // worker's call to a hung upstream) is cut off instead of holding shutdown for the timeout
    close: () => {
      closed = true;
      return pool.destroy();
    },
  };
}
