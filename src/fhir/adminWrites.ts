import type { Bundle, BundleEntry, OperationOutcome, Resource } from '@medplum/fhirtypes';
import { AppError, toOperationOutcome } from '../errors.js';
import type { WriteTarget } from './auditedWrites.js';
import type { FhirTarget } from './fhirPath.js';
import { jsonPatchRenames } from './jsonPatch.js';
import { isEntityTags, parseCallerBody, successOutcome } from './negotiation.js';
import { isUpstreamSuccess, upstreamStatusError } from './upstreamStatus.js';

/**
 * An admin's forwarded writes (pure): what they must not be, checked before they go upstream — a
 * write that would make or unmake a person (Patient, Practitioner) beside provisioning, which
 * keeps every such record paired with its account, and request shapes the FHIR server cannot
 * read (real HAPI answered each with a 500, a 502 for our client, where the mistake was the
 * caller's) — and what each entry of a batch did, for the audit trail.
 */

export const PEOPLE: ReadonlySet<string> = new Set(['Patient', 'Practitioner']);

/** 405 for a write the URL cannot take (a type without a condition, the base): what it takes instead (RFC 9110 section 15.5.6). */
function typeTakesNoWrite(): AppError {
  return new AppError('method_not_allowed', { headers: { Allow: 'GET, HEAD, POST' } });
}

function refuse(message: string): AppError {
  return new AppError('validation_failed', { detail: message });
}

/**
 * A write of one person outside provisioning: a conditional update or delete (it may create a
 * person without an account, or remove one whose account stays). Writes by id are checked
 * against the server and our accounts by the passthrough (`assertPersonWrite`).
 */
export function assertAdminWrite(
  method: string,
  target: FhirTarget,
  query: URLSearchParams,
  ifMatch: string | undefined,
): void {
  // R4 writes no version and no history: HAPI took DELETE Patient/1/_history/1 for a delete of the
  // record, past the check that keeps a person while an account is linked to them
  if (target.history && !target.operation && method !== 'GET')
    throw new AppError('method_not_allowed', { headers: { Allow: 'GET, HEAD' } });
  const write = method === 'PUT' || method === 'PATCH' || method === 'DELETE';
  if (!write || target.operation) return;
  if (target.type === undefined) throw typeTakesNoWrite();
  const conditional = target.id === undefined;
  // a type takes these only with a condition (HAPI answered a PATCH without one with a 500)
  if (conditional && query.size === 0) throw typeTakesNoWrite();
  // HAPI ignores If-Match on a conditional write: the write would go through whatever version it met
  if (conditional && ifMatch !== undefined)
    throw refuse('If-Match needs a write by id (Type/id); a conditional write cannot be versioned.');
  if (conditional && method !== 'PATCH' && PEOPLE.has(target.type ?? ''))
    throw refuse(
      `Write a ${target.type} by its id: a conditional ${method} could create or delete a person without their account.`,
    );
}

/** A PATCH body the server can read (R4 http.html#patch): a JSON Patch array, or FHIRPath Patch Parameters. */
export function assertPatchBody(
  target: FhirTarget,
  contentType: string | undefined,
  body: string | undefined,
): void {
  if (!target.type) throw typeTakesNoWrite();
  const parsed = parseCallerBody(body).resource;
  const jsonPatch = /^application\/json-patch\+json\b/i.test(contentType ?? '');
  if (jsonPatch && !Array.isArray(parsed)) throw refuse('A JSON Patch body must be an array of operations.');
  const isParameters = (parsed as { resourceType?: unknown } | null)?.resourceType === 'Parameters';
  if (!jsonPatch && !isParameters)
    throw refuse(
      'A FHIRPath Patch body must be a Parameters resource (or send application/json-patch+json).',
    );
  if (patchRenames(target.type, parsed)) throw renamingPatch();
}

function renamingPatch(): AppError {
  return refuse('A patch changes a record, not its id or resourceType: write another record with POST.');
}

/**
 * Whether a patch would change which record it is: a JSON Patch (RFC 6902) operation on the whole
 * resource, its `id` or its `resourceType` (jsonPatch.ts), or a FHIRPath Patch (R4 fhirpatch.html)
 * one on them (fhirPathPatchRenames). The embedded engine stored the result under the new id:
 * another record made by an update, a Patient without an account among them; HAPI answered 200.
 */
export function patchRenames(type: string, patch: unknown): boolean {
  if (Array.isArray(patch)) return jsonPatchRenames(patch);
  const parameters = (patch as { parameter?: unknown } | null)?.parameter;
  return Array.isArray(parameters) && parameters.some((p) => fhirPathOperationRenames(type, p));
}

/** A part's value whatever its `value[x]`: HAPI reads a path given as valueCode or valueUri too. */
function partValue(part: unknown): unknown {
  for (const [key, value] of Object.entries((part ?? {}) as Record<string, unknown>))
    if (key.startsWith('value')) return value;
  return undefined;
}

/** Steps that stay at the resource itself: its type, `$this`, variables, filters and functions. */
function staysAtRoot(step: string, type: string): boolean {
  return (
    step === type ||
    step === 'Resource' ||
    step === 'DomainResource' ||
    step === '$this' ||
    step.startsWith('%') ||
    step.includes('(')
  );
}

/** Whether one FHIRPath Patch operation (R4 fhirpatch.html) targets the resource itself, its id or its type. */
function fhirPathOperationRenames(type: string, operation: unknown): boolean {
  const parts: unknown[] = Array.isArray((operation as { part?: unknown } | null)?.part)
    ? (operation as { part: unknown[] }).part
    : [];
  const part = (name: string) =>
    partValue(parts.find((p) => (p as { name?: unknown } | null)?.name === name));
  const path = part('path');
  if (typeof path !== 'string') return false;
  // comments, backticks and spaces change nothing of where a path leads
  const plain = path
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\/\/.*$/gm, '')
    .replace(/[`\s]/g, '');
  const steps = plain.split('.');
  let at = 0;
  while (at < steps.length && staysAtRoot(steps[at] ?? '', type)) at++;
  const first = steps[at];
  // at the resource itself only an add of another element leaves it the same record
  if (first === undefined || first === '')
    return part('type') !== 'add' || part('name') === 'id' || part('name') === 'resourceType';
  return first === 'id' || first === 'resourceType';
}

/** A request body as JSON, or undefined when it is none (the upstream will refuse it). */
export function parsedOrNone(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A batch entry's path: a type (or `$operation`) first, then plain segments; no leading `/`, no scheme, no dot segments. */
const ENTRY_PATH = /^(?:[A-Z][A-Za-z]{1,63}|\$[A-Za-z-]{1,64})(?:\/(?!\.+(?:\/|$))[A-Za-z0-9\-.$_]{1,64})*$/;

/** A write of one person by id in a batch, which the caller checks as it checks one sent alone. */
export interface PersonWrite {
  readonly method: 'PUT' | 'DELETE';
  readonly type: string;
  readonly id: string;
}

/**
 * A batch or transaction Bundle (R4 http.html#transaction): each entry needs `request.method` and
 * `request.url`; no entry may create a person or replace or delete one by a condition
 * (provisioning creates them, one by one, with their account). Returns the entries that replace
 * or delete a person by id.
 */
export function assertBatchBody(body: string | undefined): PersonWrite[] {
  // parseCallerBody also bounds the depth: the entries are walked and sent on, and a Bundle
  // thousands deep overflowed the stack (a 500)
  const bundle = parseCallerBody(body).resource as {
    resourceType?: unknown;
    type?: unknown;
    entry?: unknown;
  };
  if (bundle?.resourceType !== 'Bundle' || (bundle.type !== 'batch' && bundle.type !== 'transaction'))
    throw refuse('POST to the base takes a Bundle of type batch or transaction.');
  const entries = bundle.entry ?? [];
  if (!Array.isArray(entries)) throw refuse('Bundle.entry must be a list.');
  const people: PersonWrite[] = [];
  for (const [index, entry] of entries.entries()) {
    const { request, resource } = (entry ?? {}) as {
      request?: { method?: unknown; url?: unknown; ifMatch?: unknown; ifNoneMatch?: unknown };
      resource?: { resourceType?: unknown };
    };
    if (typeof request?.method !== 'string' || typeof request.url !== 'string')
      throw refuse(`Bundle.entry[${index}] needs request.method and request.url.`);
    const method = request.method.toUpperCase();
    const path = request.url.split('?')[0] ?? '';
    // relative to the base, as R4 asks: HAPI also takes `/Patient` and absolute URLs, which the checks below would not read
    if (!ENTRY_PATH.test(path))
      throw refuse(
        `Bundle.entry[${index}]: request.url must be relative to the base: Type, Type/id or Type?query.`,
      );
    const [type = '', id, ...rest] = path.split('/');
    const operation = [type, id, ...rest].some((segment) => segment?.startsWith('$'));
    const writes = method === 'POST' || method === 'PUT';
    if (request.ifMatch !== undefined) assertEntryIfMatch(index, request.ifMatch, method, path, request.url);
    // as the If-None-Match header on a write (passthroughService.ts): no server honoured it, the record was replaced
    if (request.ifNoneMatch !== undefined && method !== 'GET')
      throw refuse(`Bundle.entry[${index}]: request.ifNoneMatch is for reads; write with request.ifMatch.`);
    // a body of another type than the URL's: HAPI takes a POST's type from the body (a Patient through `Basic`)
    if (writes && !operation && resource !== undefined && resource?.resourceType !== type)
      throw refuse(`Bundle.entry[${index}]: the resource must be a ${type}, as its request.url says.`);
    if (method === 'PATCH' && patchRenames(type, patchOfEntry(resource)))
      throw refuse(`Bundle.entry[${index}]: a patch changes a record, not its id or resourceType.`);
    if (operation || !PEOPLE.has(type) || (!writes && method !== 'DELETE')) continue;
    if (method === 'POST' || !id || rest.length > 0 || request.url.includes('?'))
      throw refuse(
        `Bundle.entry[${index}]: a ${type} is created with POST /fhir/${type} (it provisions their account), and replaced or deleted by its id.`,
      );
    people.push({ method: method as PersonWrite['method'], type, id });
  }
  return people;
}

/** A batch entry's patch (R4 http.html#patch): FHIRPath Patch Parameters, or a JSON Patch in a Binary. */
function patchOfEntry(resource: unknown): unknown {
  const binary = resource as { resourceType?: unknown; data?: unknown } | undefined;
  if (binary?.resourceType !== 'Binary' || typeof binary.data !== 'string') return resource;
  return parsedOrNone(Buffer.from(binary.data, 'base64').toString('utf8'));
}

/**
 * An entry's `request.ifMatch` (R4 Bundle.entry.request.ifMatch) the gateway can resolve as it does
 * a write's If-Match header: entity tags on a write by id. HAPI applied a DELETE entry whose tag
 * was stale, answered `W/"abc"` and `*` with a 500, and ignores the tag on a conditional write.
 */
function assertEntryIfMatch(
  index: number,
  ifMatch: unknown,
  method: string,
  path: string,
  url: string,
): void {
  if (typeof ifMatch !== 'string' || !isEntityTags(ifMatch))
    throw refuse(
      `Bundle.entry[${index}].request.ifMatch must be an entity tag such as W/"3", a list of them, or *.`,
    );
  const segments = path.split('/');
  const byId = segments.length === 2 && !url.includes('?') && !path.includes('$');
  if (!byId || (method !== 'PUT' && method !== 'PATCH' && method !== 'DELETE'))
    throw refuse(`Bundle.entry[${index}]: ifMatch needs a PUT, PATCH or DELETE by id (Type/id).`);
}

/** An entry of a batch or transaction whose `ifMatch` the gateway resolves before sending it. */
export interface VersionedEntry {
  readonly index: number;
  readonly type: string;
  readonly id: string;
  readonly ifMatch: string;
}

/** The entries carrying `ifMatch`, of a Bundle `assertBatchBody` accepted (each a write by id). */
export function versionedEntries(bundle: Bundle): VersionedEntry[] {
  return (bundle.entry ?? []).flatMap((entry, index) => {
    const { ifMatch, url } = entry.request ?? {};
    if (ifMatch === undefined || url === undefined) return [];
    const [type = '', id = ''] = url.split('/');
    return [{ index, type, id, ifMatch }];
  });
}

/**
 * The Bundle to send upstream: each versioned entry with the tag the gateway resolved (none when
 * the record has no version id), and the entries refused here left out.
 */
export function withResolvedEntries(
  bundle: Bundle,
  tags: ReadonlyMap<number, string | undefined>,
  refused: ReadonlySet<number>,
): Bundle {
  const entry = (bundle.entry ?? []).flatMap((e, index): BundleEntry[] => {
    if (refused.has(index)) return [];
    if (!tags.has(index) || !e.request) return [e];
    const { ifMatch: _asked, ...request } = e.request;
    const tag = tags.get(index);
    return [{ ...e, request: tag === undefined ? request : { ...request, ifMatch: tag } }];
  });
  return { ...bundle, entry };
}

function refusedEntry(): BundleEntry {
  const outcome: OperationOutcome = {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code: 'conflict', details: { text: 'ifMatch names no current version.' } }],
  };
  return { response: { status: '412 Precondition Failed', outcome } };
}

/** The batch's answer with a 412 in the place of each entry refused here (entries answer in the request's order). */
export function withRefusedEntries(answer: Bundle, refused: ReadonlySet<number>): Bundle {
  if (refused.size === 0) return answer;
  const answered = [...(answer.entry ?? [])];
  const total = answered.length + refused.size;
  const entry: BundleEntry[] = [];
  for (let index = 0; index < total; index++)
    entry.push(refused.has(index) ? refusedEntry() : (answered.shift() ?? {}));
  return { ...answer, entry };
}

/** What one entry of a batch or transaction did, as its answer tells it. */
export interface BatchEntryOutcome {
  readonly method: string;
  readonly type: string | undefined;
  readonly id: string | undefined;
  readonly status: number;
  readonly resource: Resource | undefined;
}

/** `Type/id`, optionally `/_history/v`, at the end of a relative or absolute URL; or a type alone. */
const ENTRY_TARGET =
  /(?:^|\/)([A-Z][A-Za-z]{1,63})(?:\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?)?\/?$/;

/**
 * Each entry of a batch's or transaction's answer with the request entry it answers (R4
 * http.html#transaction-response: in the same order): the method asked, the record written
 * (`response.location` when the server names it, else the request's URL) and the entry's status.
 */
export function batchEntryOutcomes(asked: unknown, answer: Bundle): BatchEntryOutcome[] {
  const requests = (asked as { entry?: unknown } | null)?.entry;
  return (answer.entry ?? []).map((entry, index) => {
    const request = (Array.isArray(requests) ? requests[index] : undefined)?.request as
      | { method?: unknown; url?: unknown }
      | undefined;
    const location = entry.response?.location;
    const url = typeof location === 'string' ? location : typeof request?.url === 'string' ? request.url : '';
    const target = ENTRY_TARGET.exec(url.split('?')[0] ?? '');
    const status = Number.parseInt(entry.response?.status ?? '', 10);
    return {
      method: typeof request?.method === 'string' ? request.method.toUpperCase() : 'UNKNOWN',
      type: target?.[1],
      id: target?.[2],
      status: Number.isNaN(status) ? 0 : status,
      resource: entry.resource,
    };
  });
}

/**
 * A batch- or transaction-response with each entry's outcome (and an OperationOutcome in a
 * resource's place) in the gateway's words for the entry's status: the upstream's diagnostics may
 * name hosts, tables or other patients' data.
 */
export function withOurOutcomes(bundle: Bundle): Bundle {
  const entry = bundle.entry?.map(({ resource, response, ...rest }): BundleEntry => {
    const saidSomething = response?.outcome !== undefined || resource?.resourceType === 'OperationOutcome';
    const kept = resource && resource.resourceType !== 'OperationOutcome' ? { resource } : {};
    if (!response) return { ...rest, ...kept };
    const { outcome: _upstreamOutcome, ...status } = response;
    if (!saidSomething) return { ...rest, ...kept, response: status };
    const code = Number.parseInt(response.status ?? '', 10);
    const ours = isUpstreamSuccess(code)
      ? successOutcome()
      : toOperationOutcome(upstreamStatusError(code, 'forwarded'));
    return { ...rest, ...kept, response: { ...status, outcome: ours as OperationOutcome } };
  });
  return entry ? { ...bundle, entry } : bundle;
}

/** What of a request decides the answer it may get. */
type AnsweredTarget = WriteTarget & Pick<FhirTarget, 'compartmentType' | 'history' | 'versionId'>;

/** Whether a request's success is a Bundle whatever its type: a search, a compartment search or a history. */
function answersBundle(target: AnsweredTarget): boolean {
  return (
    target.id === undefined ||
    target.compartmentType !== undefined ||
    (target.history === true && target.versionId === undefined)
  );
}

/**
 * Why a success the server answered cannot be the answer to this forwarded request, or undefined
 * when it can: a 304 to anything but a conditional read, a record other than the one asked for
 * (another type, another id; a Bundle to the read of one record), a create answered 201 with
 * neither the record nor where it is. Relayed, each would tell the admin something happened that did not (DESIGN.md section 9: 502).
 * An operation's or a batch's answer is its own.
 */
export function forwardedAnswerMismatch(
  method: string,
  target: AnsweredTarget,
  answer: { status: number; body?: unknown; headers: Readonly<Record<string, string>> },
): string | undefined {
  const reading = method === 'GET' || method === 'HEAD';
  if (answer.status === 304) return reading ? undefined : `304 to a ${method}`;
  if (target.operation || !target.type) return undefined;
  const body = answer.body as Resource | undefined;
  if (body === undefined) {
    const located = answer.headers.location || answer.headers['content-location'];
    return method === 'POST' && answer.status === 201 && !located
      ? '201 without the record or its Location'
      : undefined;
  }
  // a search, a compartment search (`Patient/1/Observation`) or a history answers a Bundle; a read of one record does not
  if (body.resourceType === 'Bundle' && answersBundle(target)) return undefined;
  // a write may answer an outcome (Prefer: return=OperationOutcome)
  if (!reading && body.resourceType === 'OperationOutcome') return undefined;
  if (body.resourceType !== target.type) return `a ${body.resourceType} to a request for ${target.type}`;
  if (target.id !== undefined && body.id !== target.id)
    return `another ${target.type} than the one asked for`;
  return undefined;
}
