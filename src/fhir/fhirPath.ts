import { isResourceType } from '@medplum/core';
import { AppError } from '../errors.js';
import { FHIR_ID_PATTERN } from '../http/schemas.js';

/**
 * The one path model of the passthrough: the raw request path is parsed once into
 * (type, id, history/version, operation, compartment). The upstream URL is later built only
 * from these validated parts, so a client can never make the gateway call another host or
 * path. https://hl7.org/fhir/R4/http.html
 */

export interface FhirTarget {
  /** An R4 resource type, case-sensitive; undefined at system level. */
  readonly type?: string;
  readonly id?: string;
  /** `_history` was asked (with `versionId` for a vread). */
  readonly history?: boolean;
  readonly versionId?: string;
  /** `$everything`, `$validate`, ... */
  readonly operation?: string;
  /** `Patient/123/Observation`: a compartment search. */
  readonly compartmentType?: string;
  /** `Observation/_search` (POST form search). */
  readonly searchPost?: boolean;
  /** The validated relative path to send upstream. */
  readonly upstreamPath: string;
}

/** Whose history: a record's (type and id), a type's, or the whole server's (neither). */
export interface HistoryOf {
  readonly type?: string;
  readonly id?: string;
}

/** `Patient/1/_history`, `Patient/_history` or `_history`: upstream, in the gateway's links and in cursors alike. */
export function historyPath(of: HistoryOf): string {
  if (of.type && of.id) return `${of.type}/${of.id}/_history`;
  return of.type ? `${of.type}/_history` : '_history';
}

const OPERATION = /^\$[a-zA-Z][a-zA-Z0-9-]{0,63}$/;

function refuse(message: string): AppError {
  return new AppError('validation_failed', { errors: [{ path: 'url', message }] });
}

/** Encoded slashes or dots, dot segments, empty segments, backslashes, NUL, absolute URLs: all refused. */
function assertPlainPath(raw: string): void {
  if (!raw.startsWith('/fhir')) throw refuse('must start with /fhir');
  if (/%(2f|5c|2e|00)/i.test(raw) || /[\\\0]/.test(raw))
    throw refuse('must not contain encoded slashes, dots, backslashes or NUL');
  const rest = raw.slice('/fhir'.length);
  if (rest === '' || rest === '/') return;
  if (!rest.startsWith('/') || rest.includes('//')) throw refuse('must not contain empty segments');
  for (const segment of rest.slice(1).split('/')) {
    if (segment === '.' || segment === '..' || segment.includes(':'))
      throw refuse('must not contain dot segments or URLs');
  }
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw refuse('is not valid percent-encoding');
  }
}

function resourceType(segment: string): string {
  if (!isResourceType(segment))
    throw refuse(`${segment} is not an R4 resource type (names are case-sensitive)`);
  return segment;
}

function id(segment: string): string {
  if (!FHIR_ID_PATTERN.test(segment)) throw refuse('is not a valid resource id');
  return segment;
}

/** Parses the raw (still percent-encoded) request path, without its query. */
export function parseFhirPath(rawPath: string): FhirTarget {
  assertPlainPath(rawPath);
  const segments = rawPath.slice('/fhir'.length).split('/').filter(Boolean).map(decodeSegment);
  const [first, second, third, fourth, ...more] = segments;
  if (more.length > 0) throw refuse('has too many segments');
  if (first === undefined) return { upstreamPath: '' };
  if (first === 'metadata' && second === undefined)
    return { operation: 'metadata', upstreamPath: 'metadata' };
  if (first === '_history' && second === undefined) return { history: true, upstreamPath: '_history' };
  if (first === '_search' && second === undefined) return { searchPost: true, upstreamPath: '' };
  if (OPERATION.test(first) && second === undefined) return { operation: first, upstreamPath: first };
  const type = resourceType(first);
  if (second === undefined) return { type, upstreamPath: type };
  if (second === '_search' && third === undefined) return { type, searchPost: true, upstreamPath: type };
  if (second === '_history' && third === undefined)
    return { type, history: true, upstreamPath: `${type}/_history` };
  if (OPERATION.test(second) && third === undefined)
    return { type, operation: second, upstreamPath: `${type}/${second}` };
  const resourceId = id(second);
  const base = `${type}/${resourceId}`;
  if (third === undefined) return { type, id: resourceId, upstreamPath: base };
  if (third === '_history' && fourth === undefined)
    return { type, id: resourceId, history: true, upstreamPath: `${base}/_history` };
  if (third === '_history' && fourth !== undefined) {
    return {
      type,
      id: resourceId,
      history: true,
      versionId: id(fourth),
      upstreamPath: `${base}/_history/${fourth}`,
    };
  }
  if (OPERATION.test(third) && fourth === undefined) {
    return { type, id: resourceId, operation: third, upstreamPath: `${base}/${third}` };
  }
  if (fourth === undefined) {
    const compartmentType = resourceType(third);
    return { type, id: resourceId, compartmentType, upstreamPath: `${base}/${compartmentType}` };
  }
  throw refuse('is not a FHIR REST path');
}
