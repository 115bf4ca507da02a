import { AppError, type ErrorCode } from '../errors.js';

/**
 * The one mapping from an upstream FHIR server's HTTP status to what our client sees, with FHIR
 * semantics (https://hl7.org/fhir/R4/http.html): 304 and 2xx pass; 404 and 410 are "not found"
 * (a deleted resource is as absent as a missing one, and says nothing more); 409, 412 and 422
 * keep their meaning; every other failure, and anything we cannot read, is the upstream's fault
 * (502). The upstream's own diagnostics never reach the client: they may name hosts, tables or
 * other patients' data (HAPI echoes search values in its OperationOutcomes).
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
};

/** Whether an upstream status is a success the caller handles itself (2xx, and 304 for conditional reads). */
export function isUpstreamSuccess(status: number): boolean {
  return (status >= 200 && status < 300) || status === 304;
}

/**
 * The error for an upstream status that is not a success. 401/403 mean our own credentials
 * were refused (a misconfiguration, never the caller's fault): 502 like any other failure.
 */
export function upstreamStatusError(status: number): AppError {
  const code = CODE_BY_STATUS[status];
  const cause = new Error(`FHIR server answered ${status}`);
  if (!code) return new AppError('upstream_error', { cause });
  // a refusal is labelled `http_<status>` in our logs and the outbox's last_error, never in a response
  Object.assign(cause, { code: `http_${status}` });
  if (code === 'validation_failed')
    return new AppError(code, { detail: 'The FHIR server refused the request.', cause });
  return new AppError(code, { cause });
}

/** A 2xx answer whose body is not what the interaction promises (a non-Bundle search, an OperationOutcome read). */
export function unexpectedUpstreamBody(what: string): AppError {
  return new AppError('upstream_error', { cause: new Error(`FHIR server answered ${what}`) });
}
