import { AppError, type ErrorCode } from '../errors.js';

/**
 * The one mapping from an upstream FHIR server's HTTP status to what our client sees, with FHIR
 * semantics (https://hl7.org/fhir/R4/http.html):
 * - 2xx, and 304 to a conditional read, pass (`isUpstreamSuccess`).
 * - 404 and 410 are "not found": a deleted resource is as absent as a missing one and says nothing
 *   more. Except: an admin's forwarded request is told 410 Gone; on a search of a type they mean a
 *   wrong server or type (502); on a value-set search, an unknown value set (400); on a page the
 *   server linked to, a search it forgot (410 page_expired).
 * - 400, 405, 409, 412, 413, 414, 415 and 422 keep their meaning. Except: a 409 to If-Match is a
 *   stale version (412); a 405 to a GET is an unsupported parameter (400); Jetty's 431 is 414;
 *   409, 412, 413, 415 and 422 speak of a body or a precondition, so to a read the gateway made
 *   (no body, no If-Match) they are the server's fault (502), as is 404 or 410 to a create of a
 *   type (`POST Observation` cannot miss).
 * - Everything else, 401 and 403 included (our credentials), and anything we cannot read, is the
 *   upstream's fault (502).
 * The upstream's own diagnostics never reach the client: they may name hosts, tables or other
 * patients' data (HAPI echoes search values in its OperationOutcomes).
 */

const CODE_BY_STATUS: Readonly<Record<number, ErrorCode>> = {
  400: 'validation_failed',
  404: 'not_found',
  405: 'method_not_allowed',
  409: 'conflict',
  410: 'not_found',
  412: 'precondition_failed',
  413: 'payload_too_large',
  414: 'uri_too_long',
  415: 'unsupported_media_type',
  422: 'unprocessable',
  // Jetty (HAPI) answers a request line over its header buffer with 431: the caller's query was too long for it
  431: 'uri_too_long',
};

/** Refusals of a request's body or preconditions: a read the gateway made has neither. */
const REFUSALS_OF_A_BODY: ReadonlySet<number> = new Set([409, 412, 413, 415, 422]);

/**
 * What the request was, where a status means something else for it: a search, a page of one the
 * server linked to, a write with If-Match, a request an admin's passthrough forwards as it came.
 */
export type UpstreamInteraction =
  | 'search'
  | 'value-set-search'
  | 'page'
  | 'versioned-write'
  | 'forwarded'
  | 'other';

/**
 * A search naming a value set (`code:in`, `code:not-in`) is told apart: a 404 there is about the
 * value set. HAPI's paging links are searches at the base naming its stored search (`_getpages`).
 */
export function searchInteraction(params: URLSearchParams): UpstreamInteraction {
  if (params.has('_getpages')) return 'page';
  for (const name of params.keys())
    if (name.endsWith(':in') || name.endsWith(':not-in')) return 'value-set-search';
  return 'search';
}

/** Whether an upstream status is a success the caller handles itself (2xx, and 304 for conditional reads). */
export function isUpstreamSuccess(status: number): boolean {
  return (status >= 200 && status < 300) || status === 304;
}

/** Whether a write's status means the server stored what it was sent: a 2xx, never the 304 isUpstreamSuccess also takes. */
export function isStored(status: number): boolean {
  return status >= 200 && status < 300;
}

/** What the mapping may need of the request and the answer besides the status. */
export interface UpstreamExchange {
  readonly method?: string;
  /** The upstream's Allow header, relayed with a 405. */
  readonly allow?: string | undefined;
}

/**
 * The error for an upstream status that is not a success. 401/403 mean our own credentials
 * were refused (a misconfiguration, never the caller's fault): 502 like any other failure.
 */
export function upstreamStatusError(
  status: number,
  interaction: UpstreamInteraction = 'other',
  exchange: UpstreamExchange = {},
): AppError {
  // a page the server linked to and then forgot (HAPI keeps a search's results for a while, and
  // not across a restart: 410 HAPI-0417): the search is to run again, nothing is missing or broken
  if (interaction === 'page' && (status === 404 || status === 410))
    return new AppError('page_expired', {
      cause: Object.assign(new Error(`FHIR server answered ${status}`), { code: `http_${status}` }),
    });
  // a search of a type cannot be missing: 404/410 there means a wrong base URL, a server that is
  // not FHIR, or a type it does not serve — its fault, not "no such resource" for the caller
  // (HAPI answers a value set it does not know, `code:in=<url>`, with 404: the caller's query to mend)
  const unknownValueSet = interaction === 'value-set-search' && status === 404;
  const searching = interaction === 'search' || interaction === 'value-set-search';
  const missingType = searching && (status === 404 || status === 410) && !unknownValueSet;
  // R4 http.html#concurrency: a stale If-Match is 412; HAPI answers it with 409
  const staleVersion = interaction === 'versioned-write' && status === 409;
  // "deleted" tells that the resource existed: said only to a caller who may see every resource
  // (a scoped read cannot check the compartment of a resource the server no longer shows)
  const gone = interaction === 'forwarded' && status === 410;
  // what the gateway sent as it chose (an admin's forwarded request is sent as it came, headers too)
  const ours = interaction !== 'forwarded';
  const reading = exchange.method === 'GET' || exchange.method === 'HEAD';
  const nothingToRefuse = ours && reading && REFUSALS_OF_A_BODY.has(status);
  const createOfMissingType = ours && exchange.method === 'POST' && (status === 404 || status === 410);
  const code =
    missingType || nothingToRefuse || createOfMissingType
      ? undefined
      : staleVersion
        ? 'precondition_failed'
        : gone
          ? 'gone'
          : CODE_BY_STATUS[status];
  const cause = new Error(`FHIR server answered ${status}`);
  if (!code) return new AppError('upstream_error', { cause });
  // a refusal is labelled `http_<status>` in our logs and the outbox's last_error, never in a response
  Object.assign(cause, { code: `http_${status}` });
  if (unknownValueSet)
    return new AppError('validation_failed', {
      detail: 'A value set the search names is unknown to the FHIR server.',
      cause,
    });
  // every FHIR server reads with GET: HAPI's 405 to one means a modifier it disabled (`name:contains`)
  if (status === 405 && (exchange.method === 'GET' || exchange.method === 'HEAD'))
    return new AppError('validation_failed', {
      detail: 'The FHIR server does not support a parameter or modifier of this request.',
      cause,
    });
  // RFC 9110 section 15.5.6: a 405 names the methods the resource takes, as the server said them
  if (code === 'method_not_allowed')
    return new AppError(code, { cause, ...(exchange.allow ? { headers: { Allow: exchange.allow } } : {}) });
  if (code === 'validation_failed')
    return new AppError(code, { detail: 'The FHIR server refused the request.', cause });
  return new AppError(code, { cause });
}

const REFUSAL_LABEL = /^http_\d{3}$/;

/**
 * The upstream refusal an error was made from: the `http_<status>` label upstreamStatusError puts
 * on its cause (looked for up to three causes deep), else undefined. For logs, the audit and the
 * outbox's last_error; never for a response.
 */
export function upstreamRefusalOf(error: unknown): string | undefined {
  let cause: unknown = (error as { cause?: unknown } | null | undefined)?.cause;
  for (let depth = 0; depth < 3 && typeof cause === 'object' && cause !== null; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === 'string' && REFUSAL_LABEL.test(code)) return code;
    cause = (cause as { cause?: unknown }).cause;
  }
  return undefined;
}

/** A 2xx answer whose body is not what the interaction promises (a non-Bundle search, an OperationOutcome read). */
export function unexpectedUpstreamBody(what: string): AppError {
  return new AppError('upstream_error', { cause: new Error(`FHIR server answered ${what}`) });
}

/** What a refusal of a request the gateway built still means to its caller: the record is not there. */
const MEANT_FOR_THE_CALLER: ReadonlySet<string> = new Set(['http_404', 'http_410']);

/**
 * A failure of a request the gateway built itself (the slim endpoints: the caller sent only
 * checked fields): a refusal from the FHIR server names nothing the caller can mend (a 400 for an
 * unsupported `_sort`, a 405, a 413 to a GET, a 422 to a Patient built from a checked form), so
 * it is the server's fault — 502, as every other failure. Only "not found" stays the caller's.
 */
export function asServerFailure(error: unknown): unknown {
  if (!(error instanceof AppError)) return error;
  const refusal = upstreamRefusalOf(error);
  return refusal !== undefined && !MEANT_FOR_THE_CALLER.has(refusal)
    ? new AppError('upstream_error', { cause: error.cause })
    : error;
}

/** A slim endpoint's call to the FHIR server, its refusals answered as asServerFailure says. */
export async function asBuiltByGateway<T>(call: Promise<T>): Promise<T> {
  try {
    return await call;
  } catch (error) {
    throw asServerFailure(error);
  }
}

/** Transport failures that happen before a request is sent: the FHIR server cannot have acted on it. */
const NEVER_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * Whether a write that failed may still have been applied by the FHIR server. Only a refusal (a
 * 4xx) or a connection never made says no; a timeout, a connection lost after the request went
 * out, a 5xx (often a proxy's, after the server committed) or a success we could not read all
 * leave it unknown.
 */
export function writeMayHaveLanded(error: unknown): boolean {
  if (!(error instanceof AppError)) return true;
  // a refusal is a refusal also where the gateway answers it as the server's failure (asServerFailure)
  if (error.status < 500 || upstreamRefusalOf(error)?.startsWith('http_4')) return false;
  const cause = (error.cause as { code?: unknown } | undefined)?.code;
  return !(error.code === 'upstream_unavailable' && typeof cause === 'string' && NEVER_SENT.has(cause));
}
