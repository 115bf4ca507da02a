import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { AppError } from '../errors.js';
import { assertJsonBody, assertNestedAtMost, preferredBody } from '../fhir/negotiation.js';
import { assertScope } from '../fhir/scopeGuard.js';
import { fhirJson } from '../http/fhirJson.js';
import { requestContext } from '../http/requestContext.js';
import { createRouter } from '../http/router.js';
import { bearerSecurity, errorResponses, problem, RETRY_AFTER_HEADER } from '../http/schemas.js';
import type { AppEnv } from '../http/types.js';
import { authenticate } from '../middleware/authenticate.js';
import { requirePermission } from '../middleware/requireRole.js';
import { normalizeEmail } from '../users/userRepository.js';
import { patientFromDto, practitionerFromDto } from './fhirMappers.js';
import type { ProvisionedType } from './fhirValidation.js';
import { withIdempotency } from './idempotency.js';
import { CreatePatientBody, CreatePractitionerBody, ProvisionedResponse } from './provisioningSchemas.js';
import { provision, type ResponseKind } from './provisioningService.js';
import { reconcileIntent } from './reconciliation.js';

const authenticateAdmin = authenticate({ auditFailures: true });
const requireProvisioner = requirePermission('users:provision');
const adminOnly = [authenticateAdmin, requireProvisioner];

const IdempotencyHeader = z.object({
  'idempotency-key': z
    .string()
    .optional()
    .openapi({ description: 'Makes a retry return the first answer instead of creating twice (kept 24 h)' }),
});

const provisionResponses = {
  201: {
    description: 'Created; the access code was queued for email',
    headers: {
      'Idempotent-Replayed': {
        description:
          '`true` when this is the stored answer of an earlier request with the same Idempotency-Key',
        schema: { type: 'string' as const },
      },
    },
    content: { 'application/json': { schema: ProvisionedResponse } },
  },
  400: errorResponses[400],
  401: errorResponses[401],
  403: errorResponses[403],
  409: problem(
    'The email has an account (`conflict`); several FHIR resources already carry its account identifier (`duplicate_identifier`); or a request with this Idempotency-Key is still running (`conflict`, honour Retry-After)',
    RETRY_AFTER_HEADER,
  ),
  413: errorResponses[413],
  415: errorResponses[415],
  422: {
    ...errorResponses[409],
    description: 'Idempotency-Key reused with a different body (`idempotency_key_reused`)',
  },
  502: errorResponses[502],
  503: errorResponses[503],
  504: errorResponses[504],
};

const createPatientRoute = createRoute({
  method: 'post',
  path: '/fhir/patient',
  operationId: 'createPatient',
  tags: ['provisioning'],
  summary: 'Create a Patient on the FHIR server, its inactive account, and email an access code',
  security: bearerSecurity,
  middleware: adminOnly,
  request: {
    headers: IdempotencyHeader,
    body: { required: true, content: { 'application/json': { schema: CreatePatientBody } } },
  },
  responses: provisionResponses,
});

const createPractitionerRoute = createRoute({
  method: 'post',
  path: '/fhir/practitioner',
  operationId: 'createPractitioner',
  tags: ['provisioning'],
  summary: 'Create a Practitioner on the FHIR server, its inactive account, and email an access code',
  security: bearerSecurity,
  middleware: adminOnly,
  request: {
    headers: IdempotencyHeader,
    body: { required: true, content: { 'application/json': { schema: CreatePractitionerBody } } },
  },
  responses: provisionResponses,
});

/** The create under the caller's Idempotency-Key: a retry replays, a retry after a crash gets what reconciliation finished. */
function idempotentProvision(
  c: Context<AppEnv>,
  type: ProvisionedType,
  body: unknown,
  resource: unknown,
  responseKind: ResponseKind,
) {
  const deps = c.var.deps;
  const request = {
    actorUserId: c.var.caller.userId,
    key: c.req.header('idempotency-key'),
    route: c.req.path,
    body,
  };
  const resume = async (intentId: string) => {
    if ((await reconcileIntent(deps, intentId)) === 'held')
      throw new AppError('conflict', {
        detail: 'A request with this Idempotency-Key is still being processed; retry shortly.',
        headers: { 'Retry-After': '2' },
      });
  };
  return withIdempotency(
    deps,
    request,
    (held) => provision(deps, c.var.caller, requestContext(c), { type, resource, responseKind, held }),
    resume,
  );
}

async function slimProvision(c: Context<AppEnv>, type: ProvisionedType, body: unknown, resource: unknown) {
  const response = await idempotentProvision(c, type, body, resource, 'slim');
  return c.json(response.body as z.infer<typeof ProvisionedResponse>, 201, response.headers);
}

/** Raw FHIR create: the same flow, answered the way a FHIR server would (201, Location, the resource). */
async function rawProvision(c: Context<AppEnv>, type: ProvisionedType) {
  // a SMART app's token reaches this /fhir path too: it creates only with the create scope granted
  assertScope(c.var.caller, type, 'c');
  assertJsonBody(c.req.header('content-type'));
  // a conditional create would search upstream outside provisioning; a retry's key does its work
  if (c.req.header('if-none-exist') !== undefined)
    throw new AppError('validation_failed', {
      detail: `POST /fhir/${type} provisions an account and takes no If-None-Exist: retry with the same Idempotency-Key instead.`,
    });
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw new AppError('invalid_json');
  }
  assertNestedAtMost(body);
  const response = await idempotentProvision(c, type, body, body, 'fhir');
  const answer = preferredBody(c.req.header('prefer'), response.body);
  return fhirJson(
    answer === undefined ? undefined : JSON.stringify(answer),
    response.status,
    response.headers,
  );
}

/** POST /fhir/patient, /fhir/practitioner (slim) and POST /fhir/Patient, /fhir/Practitioner (raw FHIR). */
export function provisioningRoutes() {
  const router = createRouter();
  router.openapi(createPatientRoute, async (c) => {
    const input = c.req.valid('json');
    return slimProvision(c, 'Patient', input, patientFromDto(input, normalizeEmail(input.email)));
  });
  router.openapi(createPractitionerRoute, async (c) => {
    const input = c.req.valid('json');
    return slimProvision(c, 'Practitioner', input, practitionerFromDto(input, normalizeEmail(input.email)));
  });
  router.post('/fhir/Patient', authenticateAdmin, requireProvisioner, (c) => rawProvision(c, 'Patient'));
  router.post('/fhir/Practitioner', authenticateAdmin, requireProvisioner, (c) =>
    rawProvision(c, 'Practitioner'),
  );
  return router;
}
