import type { Bundle, Resource } from '@medplum/fhirtypes';
import { AppError } from '../errors.js';
import { parsedOrNone, versionedEntries, withRefusedEntries, withResolvedEntries } from './adminWrites.js';
import type { WriteTarget } from './auditedWrites.js';
import {
  currentOrNone,
  type FhirRequest,
  type FhirResult,
  type FhirService,
  versionIdOf,
} from './fhirService.js';
import { versionTagFor } from './negotiation.js';

/**
 * Versioned writes and reads the gateway completes where an upstream does not (R4
 * http.html#concurrency, RFC 9110): an If-Match resolved against the current version before
 * the write is sent (a stale one is 412 here, whatever the server would do), a batch's entries'
 * `ifMatch` resolved alike, and a 304 given the ETag a 200 would carry.
 */

/**
 * RFC 9110 section 15.4.5: a 304 carries the ETag a 200 would have; HAPI leaves it out. When the
 * client named one entity tag, that is the one that matched.
 */
export function withMatchedEtag(result: FhirResult, ifNoneMatch: string | undefined): FhirResult {
  if (result.status !== 304 || result.headers.etag || !ifNoneMatch || /[,*]/.test(ifNoneMatch)) return result;
  return { ...result, headers: { ...result.headers, etag: ifNoneMatch.trim() } };
}

/**
 * RFC 9110 section 13.1.2: `If-None-Match: *` on a read is false whenever the resource exists, so
 * a read that found it answers 304 (HAPI answers 200). The ETag and Last-Modified stay.
 */
export function notModifiedIfAny<T>(result: FhirResult<T>, ifNoneMatch: string | undefined): FhirResult<T> {
  if (result.status !== 200 || ifNoneMatch?.trim() !== '*') return result;
  const { text: _whole, ...rest } = result;
  return { ...rest, status: 304, body: undefined };
}

/** An If-Match checked here against the current version (read unless the caller's check did), as sent upstream. */
export async function resolvedIfMatch(
  fhir: FhirService,
  type: string,
  id: string,
  ifMatch: string,
  current?: Resource,
): Promise<string | undefined> {
  return versionTagFor(ifMatch, current ?? (await currentOrNone(fhir, type, id)));
}

/**
 * RFC 9110 section 15.4.5: a 304 carries the ETag a 200 would have. HAPI leaves it out after an
 * If-Modified-Since (an If-None-Match gives it back in withMatchedEtag): the current version's.
 */
export async function withCurrentEtag(
  fhir: FhirService,
  result: FhirResult,
  target: WriteTarget,
  path: string,
): Promise<FhirResult> {
  const { type, id } = target;
  if (
    result.status !== 304 ||
    result.headers.etag ||
    !type ||
    !id ||
    target.operation ||
    path.includes('/_history')
  )
    return result;
  const current = await fhir.read(type, id);
  const versionId = versionIdOf(current.body);
  const etag = current.headers.etag ?? (versionId ? `W/"${versionId}"` : undefined);
  return etag ? { ...result, headers: { ...result.headers, etag } } : result;
}

/** A forwarded instance write (PUT, PATCH, DELETE) with its If-Match resolved; anything else as it came. */
export async function withResolvedIfMatch(
  fhir: FhirService,
  request: FhirRequest,
  target: WriteTarget,
): Promise<FhirRequest> {
  const ifMatch = request.headers?.['if-match'];
  if (ifMatch === undefined || !target.type || !target.id || target.operation) return request;
  const { 'if-match': _, ...headers } = request.headers ?? {};
  const tag = await resolvedIfMatch(fhir, target.type, target.id, ifMatch);
  return { ...request, headers: tag === undefined ? headers : { ...headers, 'if-match': tag } };
}

/**
 * A batch's or transaction's entries with their `ifMatch` resolved as a write's header is: in a
 * batch an entry naming no current version is refused alone (412 in its place in the answer);
 * a transaction is all or nothing, so it is 412 whole.
 */
async function withResolvedEntryTags(
  fhir: FhirService,
  request: FhirRequest,
): Promise<{ request: FhirRequest; refused: ReadonlySet<number>; sendsNothing: boolean }> {
  const bundle =
    typeof request.body === 'string' ? (parsedOrNone(request.body) as Bundle | undefined) : undefined;
  const versioned = bundle ? versionedEntries(bundle) : [];
  if (!bundle || versioned.length === 0) return { request, refused: new Set(), sendsNothing: false };
  const tags = new Map<number, string | undefined>();
  const refused = new Set<number>();
  for (const { index, type, id, ifMatch } of versioned) {
    try {
      tags.set(index, await resolvedIfMatch(fhir, type, id, ifMatch));
    } catch (error) {
      if (
        !(error instanceof AppError) ||
        error.code !== 'precondition_failed' ||
        bundle.type === 'transaction'
      )
        throw error;
      refused.add(index);
    }
  }
  const body = JSON.stringify(withResolvedEntries(bundle, tags, refused));
  return {
    request: { ...request, body },
    refused,
    sendsNothing: refused.size === (bundle.entry ?? []).length,
  };
}

/** An admin's batch or transaction, sent with its entries' `ifMatch` resolved (nothing sent when every entry was refused). */
export async function sentBatch(fhir: FhirService, request: FhirRequest): Promise<FhirResult> {
  const { request: sent, refused, sendsNothing } = await withResolvedEntryTags(fhir, request);
  if (refused.size === 0) return fhir.forward(sent);
  const answer = sendsNothing
    ? {
        status: 200,
        headers: {},
        body: { resourceType: 'Bundle', type: 'batch-response', entry: [] } as Bundle,
      }
    : await fhir.forward(sent);
  const body = answer.body as Bundle | undefined;
  if (body?.resourceType !== 'Bundle') return answer;
  return { status: answer.status, headers: answer.headers, body: withRefusedEntries(body, refused) };
}

/**
 * A write's answer with its ETag (R4 http.html#versioning: the version the write made): HAPI sends
 * none with a PATCH's, so a client taking the tag for its next If-Match failed only there.
 */
export function withVersionTag(result: FhirResult): FhirResult {
  const body = result.body as Resource | undefined;
  const versionId = versionIdOf(body);
  if (
    result.headers.etag ||
    !body ||
    !versionId ||
    body.resourceType === 'Bundle' ||
    body.resourceType === 'OperationOutcome'
  )
    return result;
  return { ...result, headers: { ...result.headers, etag: `W/"${versionId}"` } };
}
