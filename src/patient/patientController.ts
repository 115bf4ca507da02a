import { createRoute, z } from '@hono/zod-openapi';
import { requestContext } from '../http/requestContext.js';
import { createRouter } from '../http/router.js';
import { bearerSecurity, errorResponses } from '../http/schemas.js';
import { authenticate } from '../middleware/authenticate.js';
import { requirePermission } from '../middleware/requireRole.js';
import { ObservationPage, ObservationQuery, PatientDtoSchema } from './patientSchemas.js';
import { myObservations, myProfile } from './patientService.js';

const patientOnly = [authenticate(), requirePermission('observations:read-own')];

const observationsRoute = createRoute({
  method: 'get',
  path: '/patient/observations',
  operationId: 'listMyObservations',
  tags: ['patient'],
  summary: "The caller's own observations, newest first",
  security: bearerSecurity,
  middleware: patientOnly,
  request: { query: ObservationQuery },
  responses: {
    200: {
      description: 'A page of observations',
      content: { 'application/json': { schema: ObservationPage } },
    },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
    410: errorResponses[410],
    502: errorResponses[502],
    504: errorResponses[504],
  },
});

const profileRoute = createRoute({
  method: 'get',
  path: '/patient/profile',
  operationId: 'getMyProfile',
  tags: ['patient'],
  summary: "The caller's own Patient record",
  security: bearerSecurity,
  middleware: patientOnly,
  // no parameters: `?patient=` and the like are refused as on every slim read, never silently ignored
  request: { query: z.object({}).strict() },
  responses: {
    200: { description: 'The profile', content: { 'application/json': { schema: PatientDtoSchema } } },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
    404: errorResponses[404],
    502: errorResponses[502],
    504: errorResponses[504],
  },
});

export function patientRoutes() {
  const router = createRouter();
  router.openapi(observationsRoute, async (c) =>
    c.json(await myObservations(c.var.deps, c.var.caller, requestContext(c), c.req.valid('query')), 200),
  );
  router.openapi(profileRoute, async (c) =>
    c.json(await myProfile(c.var.deps, c.var.caller, requestContext(c)), 200),
  );
  return router;
}
