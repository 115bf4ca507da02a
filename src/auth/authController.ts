import { createRoute, z } from '@hono/zod-openapi';
import { createRouter } from '../http/router.js';
import { bearerSecurity, EmailSchema, errorResponses, UserSchema } from '../http/schemas.js';
import { authenticate } from '../middleware/authenticate.js';
import { requirePermission } from '../middleware/requireRole.js';
import { login, me } from './authService.js';
import { PASSWORD_MAX_LENGTH } from './passwords.js';

const LoginBody = z
  .object({
    email: EmailSchema,
    password: z.string().min(1).max(PASSWORD_MAX_LENGTH).openapi({ example: 'correct horse battery staple' }),
  })
  .strict()
  .openapi('LoginRequest');

const TokenResponse = z
  .object({
    token: z.string().openapi({ description: 'ES256 access token (JWT, `typ: at+jwt`)' }),
    token_type: z.literal('Bearer'),
    expires_in: z.number().int().openapi({ example: 900, description: 'Seconds until the token expires' }),
    user: UserSchema,
  })
  .openapi('TokenResponse');

const loginRoute = createRoute({
  method: 'post',
  path: '/auth/login',
  tags: ['auth'],
  summary: 'Log in with email and password',
  request: { body: { required: true, content: { 'application/json': { schema: LoginBody } } } },
  responses: {
    200: { description: 'Logged in', content: { 'application/json': { schema: TokenResponse } } },
    400: errorResponses[400],
    401: errorResponses[401],
    415: errorResponses[415],
    429: errorResponses[429],
  },
});

const meRoute = createRoute({
  method: 'get',
  path: '/auth/me',
  tags: ['auth'],
  summary: 'The account behind the bearer token',
  security: bearerSecurity,
  middleware: [authenticate(), requirePermission('account:read-own')] as const,
  responses: {
    200: {
      description: 'The caller',
      content: { 'application/json': { schema: z.object({ user: UserSchema }) } },
    },
    401: errorResponses[401],
  },
});

/** /auth/*: parse, call one service function, return. */
export function authRoutes() {
  const router = createRouter();
  router.openapi(loginRoute, async (c) => {
    const result = await login(c.var.deps, c.req.valid('json'), {
      requestId: c.var.requestId,
      clientIp: c.var.clientIp,
    });
    return c.json(result, 200);
  });
  router.openapi(meRoute, async (c) => c.json(await me(c.var.deps, c.var.caller), 200));
  return router;
}
