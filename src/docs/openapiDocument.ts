import type { OpenAPIHono } from '@hono/zod-openapi';
import type { Config } from '../config.js';
import { errorResponses, problem, REQUEST_ID_HEADER } from '../http/schemas.js';

/**
 * The top of /openapi.json: what the generated paths cannot say by themselves — how to
 * authenticate, the error format, and the FHIR passthrough, which is described here rather
 * than operation by operation (its real contract is the FHIR server's CapabilityStatement).
 */
export function openApiDocumentConfig(config: Config) {
  const base = config.publicBaseUrl;
  const description = [
    `The slim JSON API of ${config.appName}, a gateway in front of a FHIR R4 server, for frontends;`,
    'plus a filtered FHIR R4 passthrough for FHIR-aware tools.',
    '',
    '**Authentication.** `POST /auth/login` (or `POST /auth/signup`) answers an ES256 access token',
    '(`typ: at+jwt`, 15 minutes by default) and a single-use refresh token. Send the access token as',
    '`Authorization: Bearer <token>` — never in a URL. Use **Authorize** to try protected operations.',
    '',
    '**Errors.** Slim endpoints answer errors as RFC 9457 problem details',
    '(`application/problem+json`, schema `Problem`) with a stable `code`; build UI logic on `status`',
    'and `code`, never on `detail`. 429 answers carry `Retry-After` (seconds).',
    '',
    '**FHIR R4 passthrough: `/fhir/{type}[/{id}][/_history[/{vid}]][?search]`.** A subset of the',
    '[FHIR R4 RESTful API](https://hl7.org/fhir/R4/http.html), not listed operation by operation',
    `here: what this deployment supports is its CapabilityStatement, [\`GET /fhir/metadata\`](${base}/fhir/metadata).`,
    'Every request is scoped to the caller: admins reach everything; a patient reads and searches',
    'only their own Patient compartment; a practitioner reaches the compartments of the patients',
    'assigned to them; shared directory types (Practitioner, Organization, Location, ...) are',
    'readable by every role. Searches are narrowed to that scope, and whatever could leave it',
    '(chained parameters, `_has`, `_filter`, batch and transaction, ...) is refused. Bodies are FHIR',
    'JSON (`application/fhir+json`); errors are `OperationOutcome` resources. The lower-case',
    '`POST /fhir/patient` and `POST /fhir/practitioner` below are slim provisioning endpoints;',
    '`POST /fhir/Patient` and `POST /fhir/Practitioner` (admin) run the same provisioning flow',
    'with a FHIR resource and answer like a FHIR server.',
    '',
    '**SMART App Launch.** SMART on FHIR apps get scoped tokens for `/fhir` from the OAuth 2.0',
    `authorization server under \`/oauth\` (authorization code + PKCE S256): discovery at [\`GET /fhir/.well-known/smart-configuration\`](${base}/fhir/.well-known/smart-configuration).`,
    'Its protocol endpoints and pages are not listed here; admins register apps with',
    '`/admin/smart-apps` (below). A token whose scopes do not allow a request is refused with',
    '`403 insufficient_scope` naming the missing scope.',
  ].join('\n');

  return {
    openapi: '3.1.0',
    info: { title: `${config.appName} API`, version: '0.1.0', description },
    // Relative, so "Try it out" calls the origin the page was loaded from, whatever host name the
    // browser used (127.0.0.1, localhost, a proxy's name): the page's CSP allows connect-src 'self'
    // only, and an absolute PUBLIC_BASE_URL here is refused whenever it differs from that origin.
    // "." resolves against /openapi.json's own URL, so a proxy path prefix (/api/openapi.json) is kept.
    servers: [{ url: '.', description: 'This gateway, at the address this document was loaded from' }],
    tags: [
      { name: 'auth', description: 'Login, signup with the emailed access code, sessions, password reset' },
      {
        name: 'provisioning',
        description:
          'Admins create Patient and Practitioner records and their accounts (an access code is emailed)',
      },
      { name: 'admin', description: 'Accounts, access codes, SMART apps and the audit trail (admin only)' },
      { name: 'patient', description: "A patient's own data as plain JSON (patient only)" },
      { name: 'practitioner', description: 'The patients assigned to a practitioner (practitioner only)' },
      {
        name: 'fhir',
        description:
          'The filtered FHIR R4 passthrough `/fhir/{type}...`: see the description above and the CapabilityStatement',
        externalDocs: { description: 'CapabilityStatement of this deployment', url: `${base}/fhir/metadata` },
      },
      { name: 'health', description: 'Liveness and readiness probes' },
      { name: 'docs', description: 'This document and the interactive page rendered from it' },
    ],
    externalDocs: {
      description: 'FHIR R4 passthrough: the CapabilityStatement of this deployment',
      url: `${base}/fhir/metadata`,
    },
  };
}

/** The operations that answer without the database; /readyz declares its own 503. */
const ANSWERED_WITHOUT_DATABASE = new Set(['/.well-known/jwks.json', '/docs', '/openapi.json', '/readyz']);

/**
 * Every other operation reads the database (authentication reads the account and session on
 * every request), so it can answer 503 `storage_unavailable` when the database does not answer
 * in time: declared here once rather than route by route, where one would be forgotten.
 */
export function declareStorageUnavailable(registry: OpenAPIHono['openAPIRegistry']): void {
  for (const definition of registry.definitions) {
    if (definition.type !== 'route' || ANSWERED_WITHOUT_DATABASE.has(definition.route.path)) continue;
    definition.route.responses = { ...definition.route.responses, 503: errorResponses[503] };
  }
}

/** What a route that takes no input can still be refused: the request target itself (checkRequestTarget). */
const BADLY_ENCODED = problem('A badly encoded path or query, e.g. `%FF` (`validation_failed`)');

/** Answered before any route (src/errors.ts `headers_too_large`): a huge token or cookie. */
const { headers: _noRequestId, ...HEADERS_TOO_LARGE } = problem(
  'The request headers are over 16 KiB in all (`headers_too_large`)',
);

/** The standard 400 of an operation that takes no body: it cannot meet `invalid_json` (review S3). */
const INVALID_QUERY = problem('Invalid input (`validation_failed`)');

/**
 * What every answer of every operation has, declared once (review S3): the `X-Request-Id` header,
 * on successes too; a 400 for a badly encoded request target, which every route answers before
 * its own validation (an operation that takes no input listed none); and the 431 of headers too
 * large, without the header. An operation without a body is not said to answer `invalid_json`.
 */
export function declareWhatEveryAnswerHas(registry: OpenAPIHono['openAPIRegistry']): void {
  for (const definition of registry.definitions) {
    if (definition.type !== 'route') continue;
    const declared = definition.route.responses;
    const bodyless = !definition.route.request?.body && declared[400] === errorResponses[400];
    const responses = Object.entries({
      400: BADLY_ENCODED,
      ...declared,
      ...(bodyless ? { 400: INVALID_QUERY } : {}),
    });
    definition.route.responses = {
      ...Object.fromEntries(
        responses.map(([status, response]) => [
          status,
          '$ref' in response
            ? response
            : { ...response, headers: { ...REQUEST_ID_HEADER, ...response.headers } },
        ]),
      ),
      // refused by Node's HTTP parser before any middleware ran: it carries no X-Request-Id
      431: HEADERS_TOO_LARGE,
    };
  }
}
