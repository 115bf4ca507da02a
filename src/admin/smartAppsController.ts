import { createRoute, z } from '@hono/zod-openapi';
import { canonicalScope, isRegistrableScope } from '../fhir/smartScopes.js';
import { requestContext } from '../http/requestContext.js';
import { createRouter } from '../http/router.js';
import { bearerSecurity, errorResponses, line } from '../http/schemas.js';
import { authenticate } from '../middleware/authenticate.js';
import { requirePermission } from '../middleware/requireRole.js';
import { changeSmartApp, getSmartApp, listSmartApps, registerSmartApp } from './smartAppsService.js';

/** /admin/smart-apps: admins register the SMART apps that may launch against the gateway (docs/smart.md). */

const manageApps = [authenticate({ auditFailures: true }), requirePermission('smart-apps:manage')];

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const SPACE_OR_CONTROL = /[\u0000-\u0020\u007f-\u009f\u2028\u2029]/;

/** Why a redirect URI is refused, or undefined (RFC 9700 section 2.1: exact, https but for loopback). */
function redirectUriProblem(value: string): string | undefined {
  const url = URL.parse(value);
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:'))
    return 'must be an absolute http(s) URL';
  if (url.hash || value.includes('#')) return 'must not have a fragment';
  // the URL parser drops tabs and line breaks and keeps a NUL: the URI stored and matched would
  // not be the one the admin sees, and a NUL is cut short by some clients and browsers
  if (SPACE_OR_CONTROL.test(value)) return 'must not contain spaces or control characters';
  if (url.username || url.password) return 'must not carry credentials';
  // matched exactly as stored, while the browser is sent to the URL parser's form of it (a host
  // lower-cased or in punycode, `127.1` as 127.0.0.1, a backslash as a slash): the two must be one
  if (url.href !== value) return `must be written in its canonical form: ${url.href}`;
  if (url.hostname.includes('*')) return 'must not have a wildcard: each URL is matched exactly';
  if (/%(?![0-9A-Fa-f]{2})/.test(value)) return 'must percent-encode with % and two hex digits';
  // an eavesdropper on plain http would read the authorization code
  if (url.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname))
    return 'must use https (http only for loopback)';
  return undefined;
}

const RedirectUri = z
  .string()
  .max(2000)
  .superRefine((value, ctx) => {
    const problem = redirectUriProblem(value);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  })
  .openapi({ example: 'https://app.example.com/smart/callback' });

const Scope = z
  .string()
  .max(200)
  .refine(
    isRegistrableScope,
    'must be a SMART scope ({patient|user}/{Type|*}.{cruds}, Type an R4 resource type) or launch/patient, openid, fhirUser, offline_access',
  )
  .openapi({ example: 'patient/*.rs' });

const distinct = (values: readonly string[]) => new Set(values).size === values.length;
const RedirectUris = z
  .array(RedirectUri)
  .min(1)
  .max(10)
  .refine(distinct, 'must not list a URL twice')
  .openapi({ uniqueItems: true });
const Scopes = z
  .array(Scope)
  .min(1)
  .max(50)
  .refine(
    (scopes) => distinct(scopes.map(canonicalScope)),
    'must not list a scope twice (patient/*.read is patient/*.rs)',
  )
  .openapi({
    uniqueItems: true,
    example: ['launch/patient', 'openid', 'fhirUser', 'offline_access', 'patient/*.rs'],
  });

const NewAppBody = z
  .object({
    name: line(100).openapi({ example: 'My Health Charts' }),
    type: z.enum(['public', 'confidential']).openapi({
      description:
        '`public`: a browser or mobile app without a secret (PKCE only); `confidential`: a server that keeps a secret',
    }),
    redirect_uris: RedirectUris,
    scopes: Scopes,
  })
  .strict()
  .openapi('NewSmartApp');

const ChangeAppBody = z
  .object({
    name: line(100).optional(),
    redirect_uris: RedirectUris.optional(),
    scopes: Scopes.optional(),
    active: z.boolean().optional().openapi({ description: 'false ends every session granted to the app' }),
  })
  .strict()
  .openapi('SmartAppChange');

const SmartApp = z
  .object({
    client_id: z.string().openapi({ example: '019a6b52-8d2e-7f10-a3b4-5c6d7e8f9a0b' }),
    name: z.string(),
    type: z.enum(['public', 'confidential']),
    redirect_uris: z.array(z.string()),
    scopes: z.array(z.string()),
    active: z.boolean(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi('SmartApp');

const NewSmartAppAnswer = SmartApp.extend({
  client_secret: z.string().optional().openapi({
    description: 'Confidential apps only, in this answer only: store it now, it cannot be read again',
  }),
}).openapi('RegisteredSmartApp');

const ClientIdParam = z.object({ client_id: z.string().min(1).max(64) });

const json = <T extends z.ZodType>(schema: T) => ({
  required: true,
  content: { 'application/json': { schema } },
});

const registerRoute = createRoute({
  method: 'post',
  path: '/admin/smart-apps',
  operationId: 'registerSmartApp',
  tags: ['admin'],
  summary: 'Register a SMART app (OAuth client); a confidential one gets its secret once',
  security: bearerSecurity,
  middleware: manageApps,
  request: { body: json(NewAppBody) },
  responses: {
    201: { description: 'Registered', content: { 'application/json': { schema: NewSmartAppAnswer } } },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
    413: errorResponses[413],
    415: errorResponses[415],
  },
});

const listRoute = createRoute({
  method: 'get',
  path: '/admin/smart-apps',
  operationId: 'listSmartApps',
  tags: ['admin'],
  summary: 'Registered SMART apps, newest first',
  security: bearerSecurity,
  middleware: manageApps,
  // takes no parameters: an unknown one is 400, as on the other admin lists
  request: { query: z.object({}).strict() },
  responses: {
    200: {
      description: 'Every registered app',
      content: {
        'application/json': { schema: z.object({ apps: z.array(SmartApp) }).openapi('SmartAppList') },
      },
    },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
  },
});

const getRoute = createRoute({
  method: 'get',
  path: '/admin/smart-apps/{client_id}',
  operationId: 'getSmartApp',
  tags: ['admin'],
  summary: 'One registered SMART app',
  security: bearerSecurity,
  middleware: manageApps,
  request: { params: ClientIdParam },
  responses: {
    200: { description: 'The app', content: { 'application/json': { schema: SmartApp } } },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
    404: errorResponses[404],
  },
});

const patchRoute = createRoute({
  method: 'patch',
  path: '/admin/smart-apps/{client_id}',
  operationId: 'updateSmartApp',
  tags: ['admin'],
  summary: 'Change or deactivate a SMART app (deactivation or new scopes end its sessions at once)',
  security: bearerSecurity,
  middleware: manageApps,
  request: { params: ClientIdParam, body: json(ChangeAppBody) },
  responses: {
    200: { description: 'The app after the change', content: { 'application/json': { schema: SmartApp } } },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
    404: errorResponses[404],
    413: errorResponses[413],
    415: errorResponses[415],
  },
});

export function smartAppRoutes() {
  const router = createRouter();
  router.openapi(registerRoute, async (c) =>
    c.json(await registerSmartApp(c.var.deps, c.var.caller, requestContext(c), c.req.valid('json')), 201),
  );
  router.openapi(listRoute, async (c) =>
    c.json(await listSmartApps(c.var.deps, c.var.caller, requestContext(c)), 200),
  );
  router.openapi(getRoute, async (c) =>
    c.json(
      await getSmartApp(c.var.deps, c.var.caller, requestContext(c), c.req.valid('param').client_id),
      200,
    ),
  );
  router.openapi(patchRoute, async (c) =>
    c.json(
      await changeSmartApp(
        c.var.deps,
        c.var.caller,
        requestContext(c),
        c.req.valid('param').client_id,
        c.req.valid('json'),
      ),
      200,
    ),
  );
  return router;
}
