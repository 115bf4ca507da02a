/**
 * One error class and one catalog. The code decides the HTTP status, the title, the public
 * text and the FHIR issue code; slim endpoints render it as RFC 9457 problem details
 * (https://www.rfc-editor.org/rfc/rfc9457) and /fhir/* as an OperationOutcome
 * (https://hl7.org/fhir/R4/operationoutcome.html).
 */

export interface CatalogEntry {
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  /** http://hl7.org/fhir/valueset-issue-type.html */
  readonly fhirCode: string;
}

export const ERROR_CATALOG = {
  validation_failed: {
    status: 400,
    title: 'Bad Request',
    detail: 'The request is not valid.',
    fhirCode: 'invalid',
  },
  invalid_json: {
    status: 400,
    title: 'Bad Request',
    detail: 'The request body is not valid JSON.',
    fhirCode: 'structure',
  },
  invalid_access_code: {
    status: 400,
    title: 'Bad Request',
    detail: 'The email or code is not valid, or the code has expired. Ask for a new code if needed.',
    fhirCode: 'invalid',
  },
  unauthenticated: {
    status: 401,
    title: 'Unauthorized',
    detail: 'A valid bearer token is required.',
    fhirCode: 'login',
  },
  invalid_credentials: {
    status: 401,
    title: 'Unauthorized',
    detail: 'Email or password is incorrect.',
    fhirCode: 'login',
  },
  invalid_refresh_token: {
    status: 401,
    title: 'Unauthorized',
    detail: 'The refresh token is not valid. Log in again.',
    fhirCode: 'login',
  },
  forbidden: {
    status: 403,
    title: 'Forbidden',
    detail: 'Your role does not allow this request.',
    fhirCode: 'forbidden',
  },
  insufficient_scope: {
    status: 403,
    title: 'Forbidden',
    detail: "The token's scopes do not allow this request.",
    fhirCode: 'forbidden',
  },
  not_found: {
    status: 404,
    title: 'Not Found',
    detail: 'The resource does not exist.',
    fhirCode: 'not-found',
  },
  method_not_allowed: {
    status: 405,
    title: 'Method Not Allowed',
    detail: 'This method is not supported here.',
    fhirCode: 'not-supported',
  },
  not_acceptable: {
    status: 406,
    title: 'Not Acceptable',
    detail: 'This server answers in FHIR JSON only (application/fhir+json).',
    fhirCode: 'not-supported',
  },
  conflict: {
    status: 409,
    title: 'Conflict',
    detail: 'The request conflicts with the current state.',
    fhirCode: 'conflict',
  },
  duplicate_identifier: {
    status: 409,
    title: 'Conflict',
    detail:
      'More than one FHIR resource already carries this account identifier; resolve the duplicates on the FHIR server first.',
    fhirCode: 'duplicate',
  },
  gone: {
    status: 410,
    title: 'Gone',
    detail: 'The resource was deleted.',
    fhirCode: 'deleted',
  },
  page_expired: {
    status: 410,
    title: 'Gone',
    detail: 'The FHIR server no longer keeps this page of results: run the search again.',
    fhirCode: 'not-found',
  },
  precondition_failed: {
    status: 412,
    title: 'Precondition Failed',
    detail:
      'The resource changed since you read it (If-Match), or the condition matched more than one resource.',
    fhirCode: 'conflict',
  },
  uri_too_long: {
    status: 414,
    title: 'URI Too Long',
    detail: 'The request URL or its query is too long.',
    fhirCode: 'too-long',
  },
  unprocessable: {
    status: 422,
    title: 'Unprocessable Content',
    detail: 'The FHIR server could not process the resource (a profile or business rule).',
    fhirCode: 'processing',
  },
  idempotency_key_reused: {
    status: 422,
    title: 'Unprocessable Content',
    detail: 'This Idempotency-Key was used with a different request.',
    fhirCode: 'business-rule',
  },
  payload_too_large: {
    status: 413,
    title: 'Content Too Large',
    detail: 'The request body is too large.',
    fhirCode: 'too-costly',
  },
  headers_too_large: {
    status: 431,
    title: 'Request Header Fields Too Large',
    detail: 'The request headers are too large.',
    fhirCode: 'too-long',
  },
  unsupported_media_type: {
    status: 415,
    title: 'Unsupported Media Type',
    detail: 'Send the body as application/json.',
    fhirCode: 'not-supported',
  },
  rate_limited: {
    status: 429,
    title: 'Too Many Requests',
    detail: 'Too many attempts. Try again later.',
    fhirCode: 'throttled',
  },
  internal_error: {
    status: 500,
    title: 'Internal Server Error',
    detail: 'Something went wrong on our side.',
    fhirCode: 'exception',
  },
  upstream_unavailable: {
    status: 502,
    title: 'Bad Gateway',
    detail: 'The FHIR server is unavailable.',
    fhirCode: 'transient',
  },
  upstream_error: {
    status: 502,
    title: 'Bad Gateway',
    detail: 'The FHIR server returned an error.',
    fhirCode: 'exception',
  },
  not_ready: {
    status: 503,
    title: 'Service Unavailable',
    detail: 'The service is not ready.',
    fhirCode: 'transient',
  },
  storage_unavailable: {
    status: 503,
    title: 'Service Unavailable',
    detail: 'The database is unavailable right now. Try again.',
    fhirCode: 'transient',
  },
  upstream_timeout: {
    status: 504,
    title: 'Gateway Timeout',
    detail: 'The FHIR server did not answer in time.',
    fhirCode: 'timeout',
  },
} as const satisfies Record<string, CatalogEntry>;

export type ErrorCode = keyof typeof ERROR_CATALOG;

/** One field-level problem, for validation errors: `{path: "email", message: "..."}`. */
export interface FieldError {
  readonly path: string;
  readonly message: string;
}

export interface AppErrorOptions {
  /** Public text replacing the catalog's default detail. Never put secrets or upstream details here. */
  readonly detail?: string;
  readonly errors?: readonly FieldError[];
  /** Extra response headers, e.g. Retry-After. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Internal cause: logged, never sent. */
  readonly cause?: unknown;
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail: string;
  readonly errors: readonly FieldError[] | undefined;
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, options: AppErrorOptions = {}) {
    const entry: CatalogEntry = ERROR_CATALOG[code];
    super(options.detail ?? entry.detail, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = entry.status;
    this.detail = options.detail ?? entry.detail;
    this.errors = options.errors;
    this.headers = options.headers ?? {};
  }
}

/** RFC 9457 problem details with our stable `code` member. */
export function toProblem(error: AppError): Record<string, unknown> {
  const entry: CatalogEntry = ERROR_CATALOG[error.code];
  return {
    type: 'about:blank',
    title: entry.title,
    status: error.status,
    code: error.code,
    detail: error.detail,
    ...(error.errors ? { errors: error.errors } : {}),
  };
}

/** The same error as a FHIR R4 OperationOutcome. */
export function toOperationOutcome(error: AppError): Record<string, unknown> {
  const entry: CatalogEntry = ERROR_CATALOG[error.code];
  const fieldIssues = (error.errors ?? []).map((e) => ({
    severity: 'error',
    code: entry.fhirCode,
    diagnostics: e.message,
    expression: [e.path],
  }));
  return {
    resourceType: 'OperationOutcome',
    issue:
      fieldIssues.length > 0
        ? fieldIssues
        : [
            {
              severity: 'error',
              code: entry.fhirCode,
              details: { text: error.detail },
              diagnostics: error.code,
            },
          ],
  };
}
