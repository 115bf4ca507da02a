import { adminRoutes } from './admin/adminController.js';
import { smartAppRoutes } from './admin/smartAppsController.js';
import { authRoutes } from './auth/authController.js';
import { jwksRoutes } from './auth/jwksController.js';
import { docsRoutes, docsTrailingSlash } from './docs/docsController.js';
import {
  declareStorageUnavailable,
  declareWhatEveryAnswerHas,
  openApiDocumentConfig,
} from './docs/openapiDocument.js';
import { passthroughRoutes } from './fhir/passthroughController.js';
import { healthRoutes } from './health/healthController.js';
import { onError, onNotFound } from './http/errorHandler.js';
import { createRouter } from './http/router.js';
import type { AppDeps } from './http/types.js';
import { importEsm } from './importEsm.js';
import { metricsRoutes } from './metrics/metricsController.js';
import { auditBackpressure } from './middleware/auditBackpressure.js';
import { bodyPolicy } from './middleware/bodyPolicy.js';
import { clientIp } from './middleware/clientIp.js';
import { corsPolicy } from './middleware/cors.js';
import { requestId } from './middleware/requestId.js';
import { requestLog } from './middleware/requestLog.js';
import { checkRequestTarget } from './middleware/requestTarget.js';
import { securityHeaders } from './middleware/securityHeaders.js';
import { oauthRoutes } from './oauth/oauthRoutes.js';
import { decidesOwnCors } from './oauth/urls.js';
import { patientRoutes } from './patient/patientController.js';
import { practitionerRoutes } from './practitioner/practitionerController.js';
import { provisioningRoutes } from './provisioning/provisioningController.js';

/**
 * The SMART authorization server, built on the first /oauth request. oidc-provider is imported
 * first, asynchronously: the CommonJS bundle's modules require it, and a first require of an ES
 * module loads its whole graph with the event loop blocked (0.2–0.5 s here; a require after the
 * import takes it from the module cache in under 1 ms).
 */
const loadOAuthServer = (deps: AppDeps) =>
  importEsm('oidc-provider')
    .then(() => import('./oauth/provider.js'))
    .then((m) => m.createOAuthServer(deps));

/**
 * Builds the whole HTTP application from its dependencies: middleware order, route mounts,
 * error handling — nothing else. A request reads: requestId -> log -> audit backpressure ->
 * headers -> client IP -> request-target check (NUL, malformed query) -> CORS -> body limit ->
 * (per route) authenticate -> requireRole -> controller -> service.
 */
export function createApp(deps: AppDeps) {
  const app = createRouter();

  app.use(async (c, next) => {
    c.set('deps', deps);
    deps.requests.enter();
    try {
      await next();
    } finally {
      deps.requests.leave();
    }
    // a stopping process answers what its keep-alive connections still bring, then closes them:
    // the client reconnects to a process that serves, instead of meeting a connection cut at the deadline
    if (deps.stopping()) c.header('Connection', 'close');
  });
  app.use(requestId());
  app.use(requestLog(deps.logger));
  app.use(auditBackpressure());
  app.use(securityHeaders());
  app.use(clientIp(deps.config.trustProxy));
  // CORS first: a browser must be able to read the 400 a malformed query gets (review S3)
  app.use(corsPolicy(deps.config.corsOrigins, decidesOwnCors));
  app.use(checkRequestTarget());
  app.use('*', bodyPolicy());

  app.route('/', healthRoutes());
  app.route('/', metricsRoutes(deps.config));
  app.route('/', jwksRoutes());
  app.route('/', authRoutes());
  app.route('/', provisioningRoutes());
  app.route('/', adminRoutes());
  app.use('/docs/', docsTrailingSlash());
  app.route('/', docsRoutes());
  app.route('/', patientRoutes());
  app.route('/', practitionerRoutes());
  // SMART App Launch: /oauth/* and /fhir/.well-known/smart-configuration, before the passthrough
  app.route(
    '/',
    oauthRoutes(() => loadOAuthServer(deps)),
  );
  app.route('/', smartAppRoutes());
  app.route('/', passthroughRoutes());

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
  });
  declareStorageUnavailable(app.openAPIRegistry);
  declareWhatEveryAnswerHas(app.openAPIRegistry);
  app.doc31('/openapi.json', openApiDocumentConfig(deps.config));

  app.onError(onError);
  // after every route: a path known under other methods answers 405 with Allow
  app.notFound(onNotFound(app.routes));
  return app;
}

export type App = ReturnType<typeof createApp>;
