import type { Resource } from '@medplum/fhirtypes';
import { parse as parseLossless } from 'lossless-json';
import { AppError } from '../errors.js';

/** A 400 naming the parameter or header at fault. */
export function refuse(parameter: string, message: string): AppError {
  return new AppError('validation_failed', { errors: [{ path: parameter, message }] });
}

/**
 * What every /fhir request is held to at the HTTP level, whatever the caller's role: query size,
 * format negotiation (JSON only), body media type, charset and depth, entity tags, `Prefer` and
 * HTTP-dates. Pure functions; the search and scope rules are in searchPolicy.ts.
 */

/** Longest query a client may send: with our narrowing added, the upstream request line stays under 8 KB. */
const MAX_QUERY_BYTES = 4096;
/** Most query parameters in one request. */
const MAX_QUERY_PARAMS = 64;

/**
 * Caps every /fhir query (all roles): an 8 KB value or 1,000 parameters would be forwarded to a
 * server that refuses long request lines (Node 16 KB, Jetty 8 KB) or spends its time on them.
 */
export function assertQuerySize(raw: string, query: URLSearchParams): void {
  const bytes = Buffer.byteLength(raw);
  // measured as it is sent on too: the upstream query is encoded again, and `,`, `|` or UTF-8
  // sent bare grow to 3 bytes each (HAPI's Jetty then answers 431 to what passed here)
  const encodedTooLong = bytes * 3 > MAX_QUERY_BYTES && query.toString().length > MAX_QUERY_BYTES;
  if (bytes > MAX_QUERY_BYTES || encodedTooLong) throw new AppError('uri_too_long');
  let count = 0;
  for (const _ of query.keys()) {
    if (++count > MAX_QUERY_PARAMS)
      throw new AppError('validation_failed', {
        errors: [{ path: 'query', message: `must have at most ${MAX_QUERY_PARAMS} parameters` }],
      });
  }
}

const JSON_FORMAT = /^(json|application\/(fhir[+ ])?json|application\/json[+ ]fhir)$/i;

/** Whether a `_format` value means FHIR JSON. */
export function isJsonFormat(value: string): boolean {
  return JSON_FORMAT.test(value);
}

/** Media ranges that admit FHIR JSON, the any-type range included. */
const JSON_RANGE = /^(\*\/\*|application\/\*|application\/(fhir\+)?json|application\/json\+fhir)$/i;

/** Whether an Accept header lets the client take FHIR JSON (no header: anything goes). */
export function acceptsJson(accept: string | undefined): boolean {
  // the usual one range, as client libraries send it, without taking it apart
  if (accept === undefined || JSON_RANGE.test(accept) || accept.trim() === '') return true;
  return accept.split(',').some((range) => {
    const [media = '', ...parameters] = range.split(';').map((part) => part.trim());
    const refused = parameters.some((p) => /^q=0(\.0{0,3})?$/i.test(p));
    return !refused && JSON_RANGE.test(media);
  });
}

/**
 * A /fhir write's body must be declared FHIR JSON (or plain JSON), in UTF-8 if a charset is named
 * (RFC 8259 section 8.1; the body is read as UTF-8): 415 otherwise, nothing stored.
 */
export function assertJsonBody(contentType: string | undefined): void {
  if (!/^application\/(fhir\+)?json\s*(;|$)/i.test(contentType ?? ''))
    throw new AppError('unsupported_media_type');
  assertUtf8Charset(contentType);
}

/** Deeper than any resource a person writes (a Questionnaire's items nest two levels each). */
const MAX_BODY_DEPTH = 128;

/**
 * Whether a parsed body nests at most `max` objects and arrays deep. Walked with a stack: every
 * recursive walk of a body (the reference check, JSON.stringify on the way upstream) overflows
 * the call stack on a body thousands deep, which was a 500.
 */
export function nestedAtMost(value: unknown, max = MAX_BODY_DEPTH): boolean {
  const pending: [unknown, number][] = [[value, 0]];
  while (pending.length > 0) {
    const [next, depth] = pending.pop() as [unknown, number];
    if (next === null || typeof next !== 'object') continue;
    if (depth >= max) return false;
    for (const item of Array.isArray(next) ? next : Object.values(next)) pending.push([item, depth + 1]);
  }
  return true;
}

/** A body nested deeper than MAX_BODY_DEPTH is 400 before anything walks it. */
export function assertNestedAtMost(value: unknown): void {
  if (!nestedAtMost(value))
    throw new AppError('validation_failed', {
      detail: `The body nests deeper than ${MAX_BODY_DEPTH} levels.`,
    });
}

/** A `_count` the server can read, on every request and every role: HAPI answered `$everything?_count=abc` with a 500. */
export function assertCountReadable(query: URLSearchParams): void {
  for (const value of query.getAll('_count'))
    if (!/^\d{1,9}$/.test(value)) throw refuse('_count', 'must be a whole number from 0');
}

/** A caller's resource: the object every check read, and the very text it came as, sent upstream. */
export interface CallerBody<T = unknown> {
  readonly resource: T;
  readonly text: string;
}

/** Whether every number of a parsed body is one a double holds: JSON.parse reads 1e400 as Infinity. */
export function finiteNumbersOnly(value: unknown): boolean {
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const next = pending.pop();
    if (typeof next === 'number' && !Number.isFinite(next)) return false;
    if (next !== null && typeof next === 'object')
      pending.push(...(Array.isArray(next) ? next : Object.values(next)));
  }
  return true;
}

/**
 * A caller's JSON body, parsed for the checks and kept as text for the server: serialising the
 * checked object again changed what was written (FHIR decimals keep their digits; 1.50 became
 * 1.5, 0.1234567890123456789 0.12345678901234568, 1e400 null). Sending the text is safe only
 * where every parser reads what JSON.parse read, so a member named twice with different values
 * is 400 (JSON.parse keeps the last, other parsers the first: the check and the server would read
 * two records), as is a number no double holds (HAPI answered it 500, the embedded server 400).
 */
export function parseCallerBody(text: string | undefined): CallerBody {
  let resource: unknown;
  try {
    resource = JSON.parse(text ?? '');
  } catch {
    throw new AppError('invalid_json');
  }
  // before the parse below, which recurses
  assertNestedAtMost(resource);
  if (!finiteNumbersOnly(resource))
    throw new AppError('validation_failed', { detail: 'A number in the body is too large to be read.' });
  try {
    parseLossless(text ?? '');
  } catch {
    // JSON.parse read it: what lossless-json refuses is a member named twice with different values
    throw new AppError('validation_failed', { detail: 'An object in the body names the same member twice.' });
  }
  return { resource, text: text ?? '' };
}

/** A body is read as UTF-8 (RFC 8259): one declared in another charset would reach the server garbled, 415. */
export function assertUtf8Charset(contentType: string | undefined): void {
  const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(contentType ?? '')?.[1];
  if (charset !== undefined && !/^utf-?8$/i.test(charset)) throw new AppError('unsupported_media_type');
}

/**
 * The gateway answers FHIR JSON only: `_format` (which overrides Accept, FHIR http.html#mime) must
 * mean JSON and Accept must admit it, else 406 (HAPI would answer XML, which the gateway cannot
 * check). `_format` and `_pretty` are then dropped: FHIR's general parameters, not search ones.
 */
export function jsonOnly(query: URLSearchParams, accept: string | undefined): URLSearchParams {
  const formats = query.has('_format') ? query.getAll('_format') : [];
  const wanted = formats.length > 0 ? formats.every((f) => JSON_FORMAT.test(f)) : acceptsJson(accept);
  if (!wanted) throw new AppError('not_acceptable');
  if (formats.length === 0 && !query.has('_pretty')) return query;
  const rest = new URLSearchParams(query);
  rest.delete('_format');
  rest.delete('_pretty');
  return rest;
}

/** `*` or a list of entity tags (`W/"3"`, `"abc"`), RFC 9110 section 8.8.3. */
const ENTITY_TAGS = /^\s*(\*|(W\/)?"[^"\s]*"(\s*,\s*(W\/)?"[^"\s]*")*)\s*$/;

/** Whether a header or a batch entry's `ifMatch` is `*` or a list of entity tags. */
export function isEntityTags(value: string): boolean {
  return ENTITY_TAGS.test(value);
}

/** If-Match and If-None-Match must be entity tags: HAPI answered `If-Match: xyz` with a 500 (a 502 here). */
export function assertEntityTags(headers: Readonly<Record<string, string | undefined>>): void {
  for (const name of ['if-match', 'if-none-match']) {
    const value = headers[name];
    if (value !== undefined && !isEntityTags(value))
      throw refuse(name, 'must be an entity tag such as W/"3", a list of them, or *');
  }
}

/**
 * The If-Match a versioned write sends upstream, resolved by the gateway against the version it
 * just read: `*` and lists become the current version's own tag, and a tag naming no current
 * version is 412 here (HAPI answered `W/"abc"` and `*` with a 500, a 502 for our client). FHIR
 * compares the opaque version id with or without `W/` (http.html#concurrency). `*` on a resource
 * without a version id sends none (the read proved it exists); a named tag then cannot be confirmed.
 */
export function versionTagFor(ifMatch: string, current: Resource | undefined): string | undefined {
  const versionId = current?.meta?.versionId;
  const tags = ifMatch.split(',').map((tag) => tag.trim().replace(/^W\//, ''));
  const matches =
    current !== undefined &&
    tags.some((tag) => tag === '*' || (versionId !== undefined && tag === `"${versionId}"`));
  if (!matches) throw new AppError('precondition_failed');
  return versionId === undefined ? undefined : `W/"${versionId}"`;
}

/**
 * FHIR http.html#ops: what a write's answer carries. `Prefer: return=minimal` asks for the status
 * and headers alone (undefined), `return=OperationOutcome` for an outcome in place of the resource.
 */
export function preferredBody(prefer: string | undefined, resource: unknown): unknown {
  if (/\breturn=minimal\b/i.test(prefer ?? '')) return undefined;
  if (/\breturn=OperationOutcome\b/i.test(prefer ?? '')) return successOutcome();
  return resource;
}

/** The outcome of a write that succeeded, in the gateway's words. */
export function successOutcome() {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'information', code: 'informational', details: { text: 'The request succeeded.' } }],
  };
}

/**
 * An If-Modified-Since the upstream can read, or none: RFC 9110 section 13.1.3 has a recipient
 * ignore one that is not a valid HTTP-date (HAPI answered garbage with a 500, a 502 here).
 */
export function httpDateOrNone(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const time = Date.parse(value);
  return Number.isNaN(time) ? undefined : new Date(time).toUTCString();
}
