import { createRoute, z } from '@hono/zod-openapi';
import { requestContext } from '../http/requestContext.js';
import { createRouter } from '../http/router.js';
import { bearerSecurity, errorResponses, FHIR_ID_PATTERN } from '../http/schemas.js';
import { authenticate } from '../middleware/authenticate.js';
import { requirePermission } from '../middleware/requireRole.js';
import { ObservationPage, ObservationQuery, PageQuery, PatientDtoSchema } from '../patient/patientSchemas.js';
import { myPatients, patientObservations } from './practitionerService.js';

const practitionerOnly = [authenticate(), requirePermission('patients:read-assigned')];

const patientsRoute = createRoute({
  method: 'get',
  path: '/practitioner/patients',
  operationId: 'listMyPatients',
  tags: ['practitioner'],
  summary: 'Patients assigned to the caller (Patient.generalPractitioner)',
  security: bearerSecurity,
  middleware: practitionerOnly,
  request: { query: PageQuery },
  responses: {
    200: {
      description: 'A page of patients',
      content: {
        'application/json': {
          schema: z
            .object({ patients: z.array(PatientDtoSchema), next_cursor: z.string().nullable() })
            .openapi('PatientPage'),
        },
      },
    },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
    410: errorResponses[410],
    502: errorResponses[502],
    504: errorResponses[504],
  },
});

const observationsRoute = createRoute({
  method: 'get',
  path: '/practitioner/patients/{fhir_id}/observations',
  operationId: 'listMyPatientObservations',
  tags: ['practitioner'],
  summary: "One assigned patient's observations (404 for any other patient)",
  security: bearerSecurity,
  middleware: practitionerOnly,
  request: {
    params: z.object({
      fhir_id: z
        .string()
        .regex(FHIR_ID_PATTERN, 'must be one FHIR id (letters, digits, - and ., at most 64)'),
    }),
    query: ObservationQuery,
  },
  responses: {
    200: {
      description: 'A page of observations',
      content: { 'application/json': { schema: ObservationPage } },
    },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
    404: errorResponses[404],
    410: errorResponses[410],
    502: errorResponses[502],
    504: errorResponses[504],
  },
});

export function practitionerRoutes() {
  const router = createRouter();
  router.openapi(patientsRoute, async (c) =>
    c.json(await myPatients(c.var.deps, c.var.caller, requestContext(c), c.req.valid('query')), 200),
  );
  router.openapi(observationsRoute, async (c) =>
    c.json(
      await patientObservations(
        c.var.deps,
        c.var.caller,
        requestContext(c),
        c.req.valid('param').fhir_id,
        c.req.valid('query'),
      ),
      200,
    ),
  );
  return router;
}
