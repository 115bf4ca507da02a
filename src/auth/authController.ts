import { createRoute, z } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { requestContext } from '../http/requestContext.js';
import { createRouter } from '../http/router.js';
import {
  bearerSecurity,
  credentialResponses,
  EmailSchema,
  errorResponses,
  line,
  PhoneSchema,
  UserSchema,
} from '../http/schemas.js';
import type { AppEnv, Caller } from '../http/types.js';
import { authenticate } from '../middleware/authenticate.js';
import { requirePermission } from '../middleware/requireRole.js';
import { forgotPassword, resendAccessCode, resetPassword } from './accountRecoveryService.js';
import { changePassword, login, logout, logoutWithRefreshToken, me, refresh, signup } from './authService.js';
import { PASSWORD_MAX_LENGTH, passwordTooLong } from './passwords.js';

// at most 128 characters as passwordLength counts them (after NFKC), the count the login uses too
const PasswordField = z
  .string()
  .min(1, 'is required')
  .refine((password) => !passwordTooLong(password), `must be at most ${PASSWORD_MAX_LENGTH} characters`)
  .openapi({
    description: `At most ${PASSWORD_MAX_LENGTH} characters: Unicode code points after NFKC normalisation`,
    maxLength: PASSWORD_MAX_LENGTH,
  });

const LoginBody = z
  .object({
    email: EmailSchema,
    password: PasswordField.openapi({ example: 'correct horse battery staple' }),
  })
  .strict()
  .openapi('LoginRequest');

const TokenResponse = z
  .object({
    token: z.string().openapi({ description: 'ES256 access token (JWT, `typ: at+jwt`)' }),
    token_type: z.literal('Bearer'),
    expires_in: z
      .number()
      .int()
      .openapi({ example: 900, description: 'Seconds until the access token expires' }),
    refresh_token: z.string().openapi({ description: 'Opaque; single use: each refresh returns a new one' }),
    user: UserSchema,
  })
  .openapi('TokenResponse');

/** The "additional profile fields" of the seed: an allow-list; anything else is refused. */
const ProfileSchema = z
  .object({
    display_name: line(100).optional().openapi({ example: 'Ann' }),
    phone: PhoneSchema.optional(),
    preferred_language: z
      .string()
      .regex(/^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$/, 'must be a language tag such as en or pt-BR')
      .optional()
      .openapi({ example: 'en' }),
  })
  .strict()
  .openapi('Profile');

const SignupBody = z
  .object({
    email: EmailSchema,
    access_code: z.string().min(1).max(64).openapi({ example: '7KQ2-M9XD-4HTP-R3VW' }),
    password: PasswordField.openapi({ example: 'a long and plain passphrase' }),
    profile: ProfileSchema.optional(),
  })
  .strict()
  .openapi('SignupRequest');

const RefreshBody = z
  .object({ refresh_token: z.string().min(1).max(200) })
  .strict()
  .openapi('RefreshRequest');
const EmailBody = z.object({ email: EmailSchema }).strict().openapi('EmailRequest');
const ResetBody = z
  .object({
    email: EmailSchema,
    code: z.string().min(1).max(64).openapi({ example: 'K2D8-4QXM-7TRV-9HPN' }),
    new_password: PasswordField.openapi({ example: 'another long plain passphrase' }),
  })
  .strict()
  .openapi('PasswordResetRequest');
const PasswordChangeBody = z
  .object({
    current_password: PasswordField.openapi({ example: 'correct horse battery staple' }),
    new_password: PasswordField.openapi({ example: 'another long plain passphrase' }),
  })
  .strict()
  .openapi('PasswordChangeRequest');
const Message = z.object({ message: z.string() }).openapi('Message');

const json = <T extends z.ZodType>(schema: T) => ({
  required: true,
  content: { 'application/json': { schema } },
});

const loginRoute = createRoute({
  method: 'post',
  path: '/auth/login',
  operationId: 'login',
  tags: ['auth'],
  summary: 'Log in with email and password',
  request: { body: json(LoginBody) },
  responses: {
    200: { description: 'Logged in', content: { 'application/json': { schema: TokenResponse } } },
    400: errorResponses[400],
    401: credentialResponses.login401,
    413: errorResponses[413],
    415: errorResponses[415],
    429: errorResponses[429],
  },
});

const signupRoute = createRoute({
  method: 'post',
  path: '/auth/signup',
  operationId: 'signup',
  tags: ['auth'],
  summary: 'Activate an account with the emailed access code and choose a password',
  request: { body: json(SignupBody) },
  responses: {
    201: {
      description: 'Registered and logged in',
      content: { 'application/json': { schema: TokenResponse } },
    },
    400: credentialResponses.code400,
    413: errorResponses[413],
    415: errorResponses[415],
    429: errorResponses[429],
  },
});

const refreshRoute = createRoute({
  method: 'post',
  path: '/auth/refresh',
  operationId: 'refreshSession',
  tags: ['auth'],
  summary: 'Exchange a refresh token for a new token pair (rotation)',
  request: { body: json(RefreshBody) },
  responses: {
    200: {
      description: 'A new pair; the old refresh token is spent',
      content: { 'application/json': { schema: TokenResponse } },
    },
    400: errorResponses[400],
    401: credentialResponses.refresh401,
    413: errorResponses[413],
    415: errorResponses[415],
  },
});

const LogoutBody = z
  .object({ refresh_token: z.string().min(1).max(200) })
  .strict()
  .openapi('LogoutRequest', {
    description: "The session's refresh token: logs out even when the access token has expired",
  });

const bearerAuthentication = [authenticate(), requirePermission('account:read-own')] as const;

/** A refresh token in the body names the session itself; without one, the bearer token must. */
const bearerUnlessRefreshToken: MiddlewareHandler<AppEnv> = async (c, next) => {
  const body: unknown = c.req.header('content-type')?.includes('json')
    ? await c.req.json().catch(() => undefined)
    : undefined;
  const [verify, permit] = bearerAuthentication;
  if (typeof (body as { refresh_token?: unknown } | undefined)?.refresh_token === 'string') {
    // a valid bearer sent along names a session too, which ends as well: a client holding a
    // stale refresh token must not believe it logged out while its access token still works
    if (c.req.header('authorization')) await verify(c, async () => {}).catch(() => undefined);
    return next();
  }
  await verify(c, async () => {
    await permit(c, next);
  });
};

const logoutRoute = createRoute({
  method: 'post',
  path: '/auth/logout',
  operationId: 'logout',
  tags: ['auth'],
  summary: 'End this session: its refresh tokens and access tokens stop working',
  description:
    'With the bearer token, or with the refresh token in the body (which works after the access token expired).',
  security: [...bearerSecurity, {}],
  middleware: [bearerUnlessRefreshToken],
  request: { body: { required: false, content: { 'application/json': { schema: LogoutBody } } } },
  responses: {
    204: { description: 'Logged out' },
    400: errorResponses[400],
    401: credentialResponses.logout401,
    413: errorResponses[413],
    415: errorResponses[415],
  },
});

const meRoute = createRoute({
  method: 'get',
  path: '/auth/me',
  operationId: 'getMe',
  tags: ['auth'],
  summary: 'The account behind the bearer token',
  security: bearerSecurity,
  middleware: [authenticate(), requirePermission('account:read-own')],
  responses: {
    200: {
      description: 'The caller',
      content: { 'application/json': { schema: z.object({ user: UserSchema }) } },
    },
    401: errorResponses[401],
  },
});

const accepted = {
  description: 'Accepted (always, whatever the email)',
  content: { 'application/json': { schema: Message } },
};

/** The code-mail routes answer alike whatever the email: nothing tells which accounts exist. */
const codeMailResponses = {
  202: accepted,
  400: errorResponses[400],
  413: errorResponses[413],
  415: errorResponses[415],
  429: errorResponses[429],
};

const resendRoute = createRoute({
  method: 'post',
  path: '/auth/access-code/resend',
  operationId: 'resendAccessCode',
  tags: ['auth'],
  summary: 'Send a fresh signup code to a pending account',
  request: { body: json(EmailBody) },
  responses: codeMailResponses,
});

const forgotRoute = createRoute({
  method: 'post',
  path: '/auth/password/forgot',
  operationId: 'forgotPassword',
  tags: ['auth'],
  summary: 'Send a password-reset code to an active account',
  request: { body: json(EmailBody) },
  responses: codeMailResponses,
});

const resetRoute = createRoute({
  method: 'post',
  path: '/auth/password/reset',
  operationId: 'resetPassword',
  tags: ['auth'],
  summary: 'Set a new password with the emailed reset code; ends every session',
  request: { body: json(ResetBody) },
  responses: {
    200: { description: 'Password changed', content: { 'application/json': { schema: Message } } },
    400: credentialResponses.code400,
    413: errorResponses[413],
    415: errorResponses[415],
    429: errorResponses[429],
  },
});

const changeRoute = createRoute({
  method: 'post',
  path: '/auth/password/change',
  operationId: 'changePassword',
  tags: ['auth'],
  summary: 'Change the password while logged in; ends every session and answers a new token pair',
  description:
    'The current password is required. Every session of the account ends (other devices are logged out); this one continues with the token pair in the answer.',
  security: bearerSecurity,
  middleware: [...bearerAuthentication],
  request: { body: json(PasswordChangeBody) },
  responses: {
    200: { description: 'Password changed', content: { 'application/json': { schema: TokenResponse } } },
    400: errorResponses[400],
    401: errorResponses[401],
    413: errorResponses[413],
    415: errorResponses[415],
    429: errorResponses[429],
  },
});

const ACCEPTED_MESSAGE = {
  resend: 'If an account is waiting for signup with this email, a new code is on its way.',
  forgot: 'If an account exists for this email, a reset code is on its way.',
};

/** /auth/*: parse, call one service function, return. */
export function authRoutes() {
  const router = createRouter();
  router.openapi(loginRoute, async (c) =>
    c.json(await login(c.var.deps, c.req.valid('json'), requestContext(c)), 200),
  );
  router.openapi(signupRoute, async (c) =>
    c.json(await signup(c.var.deps, c.req.valid('json'), requestContext(c)), 201),
  );
  router.openapi(refreshRoute, async (c) =>
    c.json(await refresh(c.var.deps, c.req.valid('json').refresh_token, requestContext(c)), 200),
  );
  router.openapi(logoutRoute, async (c) => {
    const { refresh_token } = c.req.valid('json') as { refresh_token?: string };
    const caller = c.get('caller') as Caller | undefined;
    if (refresh_token) await logoutWithRefreshToken(c.var.deps, refresh_token, requestContext(c), caller);
    else await logout(c.var.deps, c.var.caller, requestContext(c));
    return c.body(null, 204);
  });
  router.openapi(meRoute, async (c) => c.json(await me(c.var.deps, c.var.caller), 200));
  router.openapi(changeRoute, async (c) =>
    c.json(await changePassword(c.var.deps, c.var.caller, c.req.valid('json'), requestContext(c)), 200),
  );
  router.openapi(resendRoute, async (c) => {
    await resendAccessCode(c.var.deps, c.req.valid('json').email, requestContext(c));
    return c.json({ message: ACCEPTED_MESSAGE.resend }, 202);
  });
  router.openapi(forgotRoute, async (c) => {
    await forgotPassword(c.var.deps, c.req.valid('json').email, requestContext(c));
    return c.json({ message: ACCEPTED_MESSAGE.forgot }, 202);
  });
  router.openapi(resetRoute, async (c) => {
    await resetPassword(c.var.deps, c.req.valid('json'), requestContext(c));
    return c.json({ message: 'Your password was changed. Log in with the new password.' }, 200);
  });
  return router;
}
