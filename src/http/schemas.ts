import { z } from '@hono/zod-openapi';
import { MAX_EMAIL_LENGTH, NEW_ADDRESS, PLAIN_ADDRESS } from '../email/address.js';
import { ERROR_CATALOG } from '../errors.js';

/** Schemas shared by several controllers; they validate requests and describe /openapi.json. */

export const EmailSchema = z
  .string()
  .trim()
  // one plain address, exactly what the mailer sends to: no display names, CR/LF or lists that
  // could add recipients or headers to a mail (src/email/address.ts)
  .regex(PLAIN_ADDRESS, 'must be a single email address')
  .openapi({ example: 'ann@example.com', format: 'email', maxLength: MAX_EMAIL_LENGTH });

/** The email a new account is created with: a plain address whose local part is at most 64 characters. */
export const NewEmailSchema = EmailSchema.regex(
  NEW_ADDRESS,
  'must be a single email address, at most 64 characters before the @',
);

// control characters and line breaks; lone surrogates and U+FFFD (a body that was not UTF-8);
// bidi embeddings, overrides and isolates, which make a name render as another in a code mail or
// an admin's screen ("Trojan Source"). Joiners and marks inside a name stay: scripts need them.
const NOT_PLAIN_LINE = /[\p{Cc}\p{Cs}\u2028\u2029\u202A-\u202E\u2066-\u2069\uFFFD]/u;
// nothing a reader would see: spaces, zero-width characters, soft hyphens
const INVISIBLE = /^[\s\u200B-\u200D\u2060\uFEFF\u00AD]*$/u;

/** One line of text a person can read as it is stored (table-tested in tests/http/plainLine.test.ts). */
export function isPlainLine(value: string): boolean {
  return !NOT_PLAIN_LINE.test(value) && !INVISIBLE.test(value);
}

/** One line of plain text (these values end up in mails, admin screens and FHIR resources). */
export const line = (max: number) =>
  z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(max, `must be at most ${max} characters`)
    // an empty value is told once, by min
    .refine((value) => value === '' || isPlainLine(value), 'must be one line of visible text');

export const PhoneSchema = z
  .string()
  .trim()
  .regex(/^\+?[0-9 ()\-.]{3,32}$/, 'must be a phone number (digits, spaces, + ( ) - .)')
  .refine((phone) => (phone.match(/[0-9]/g)?.length ?? 0) >= 3, 'must be a phone number (at least 3 digits)')
  .openapi({ example: '+1 555 0100' });

/**
 * A FHIR resource id (https://hl7.org/fhir/R4/datatypes.html#id), but not dots alone: `.` and `..`
 * match R4's pattern, yet as a path segment they name another path (review F: `..` was a 500).
 * As regular-expression source, for the patterns of references and Locations that hold one.
 */
export const FHIR_ID_SOURCE = String.raw`(?!\.+(?:\/|$))[A-Za-z0-9\-.]{1,64}`;

export const FHIR_ID_PATTERN = new RegExp(`^${FHIR_ID_SOURCE}$`);

/** A page size from the query, 1 to `max`: digits only (Number() also read 0x10, 1e1, 2.0 and ' 5'). */
export const pageLimit = (max: number, fallback: number) => {
  const message = `must be a whole number from 1 to ${max}`;
  return z
    .preprocess(
      (value) => (typeof value === 'string' && !/^\d{1,6}$/.test(value) ? Number.NaN : value),
      z.coerce.number({ error: message }).int(message).min(1, message).max(max, message),
    )
    .default(fallback);
};

export const UserSchema = z
  .object({
    id: z.string().openapi({ example: '019a6b3e-6c1f-7b52-9d8e-2f4a1c3b5d7e' }),
    email: z.string().openapi({ example: 'ann@example.com' }),
    role: z.enum(['admin', 'patient', 'practitioner']),
    fhir_id: z.string().nullable().openapi({ example: 'f3c1a9e2-4b7d-4c11-9a55-0c2d6e8f1a23' }),
    is_registered: z.boolean(),
    profile: z.record(z.string(), z.string()),
  })
  .openapi('User');

const ProblemSchema = z
  .object({
    type: z.string().openapi({ example: 'about:blank' }),
    title: z.string(),
    status: z.number().int(),
    code: z.enum(Object.keys(ERROR_CATALOG) as [string, ...string[]]),
    detail: z.string(),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  })
  .openapi('Problem');

/** Every answer carries the request's id (echoed, or made up): quote it when reporting a problem. */
export const REQUEST_ID_HEADER = {
  'X-Request-Id': {
    description: 'The id of this request in the logs and the audit trail',
    schema: { type: 'string' },
  },
} as const;
export const RETRY_AFTER_HEADER = {
  'Retry-After': { description: 'Seconds to wait before trying again', schema: { type: 'integer' } },
} as const;

/** An error answer; `headers` beyond X-Request-Id when the answer carries more. */
export const problem = (description: string, headers: Record<string, unknown> = {}) => ({
  description,
  headers: { ...REQUEST_ID_HEADER, ...headers },
  content: { 'application/problem+json': { schema: ProblemSchema } },
});

/** Standard error responses, for route definitions. */
export const errorResponses = {
  400: problem('Invalid input (`validation_failed`, `invalid_json`)'),
  401: problem('Missing, invalid, expired or revoked bearer token (`unauthenticated`)'),
  403: problem('The role does not allow this (`forbidden`)'),
  404: problem('Not found (`not_found`)'),
  409: problem('Conflict (`conflict`)'),
  410: problem(
    'The FHIR server has forgotten the search this cursor pages (`page_expired`): start again without the cursor',
  ),
  413: problem('Body too large (`payload_too_large`)'),
  415: problem('Body is not JSON (`unsupported_media_type`)'),
  429: problem('Too many attempts; honour Retry-After (`rate_limited`)', RETRY_AFTER_HEADER),
  500: problem('Unexpected error (`internal_error`)'),
  502: problem('The FHIR server is down or failing (`upstream_unavailable`, `upstream_error`)'),
  503: problem(
    'Not ready, or the database did not answer in time (`not_ready`, `storage_unavailable`); honour Retry-After',
    RETRY_AFTER_HEADER,
  ),
  504: problem('The FHIR server did not answer in time (`upstream_timeout`)'),
} as const;

/** The credential routes' own refusals, where the standard ones would name the wrong code. */
export const credentialResponses = {
  login401: problem('Wrong email or password, or the account cannot log in (`invalid_credentials`)'),
  refresh401: problem(
    'Unknown, spent or expired refresh token, or the session ended (`invalid_refresh_token`)',
  ),
  logout401: problem(
    'The session ended already (`invalid_refresh_token`), or no valid bearer token and no valid body (`unauthenticated`; without a valid bearer token the body is not checked first)',
  ),
  code400: problem(
    'Invalid input (`validation_failed`, `invalid_json`), or a wrong, expired or spent code (`invalid_access_code`)',
  ),
} as const;

export const bearerSecurity = [{ bearerAuth: [] }];
