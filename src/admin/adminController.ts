import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { writeAudit } from '../audit/auditService.js';
import { AppError } from '../errors.js';
import { FHIR_JSON } from '../http/fhirJson.js';
import { requestContext } from '../http/requestContext.js';
import { createRouter } from '../http/router.js';
import { bearerSecurity, errorResponses, FHIR_ID_PATTERN, pageLimit } from '../http/schemas.js';
import type { AppEnv } from '../http/types.js';
import { authenticate } from '../middleware/authenticate.js';
import { requirePermission } from '../middleware/requireRole.js';
import {
  type AuditQuery,
  auditEventBundle,
  getUser,
  listAudit,
  listOrphans,
  listUsers,
  reissueAccessCode,
  setUserActive,
} from './adminService.js';

const manageUsers = [authenticate({ auditFailures: true }), requirePermission('users:manage')];
const readAudit = [authenticate({ auditFailures: true }), requirePermission('audit:read')];

/** Reading the trail is itself an admin action, so it is audited too. */
function auditRead(c: Context<AppEnv>, action: string, targetUserId?: string) {
  return writeAudit(c.var.deps.db, c.var.deps.clock, {
    action,
    outcome: 'success',
    targetUserId: targetUserId ?? null,
    actorUserId: c.var.caller.userId,
    actorRole: c.var.caller.role,
    requestId: c.var.requestId,
    clientIp: c.var.clientIp,
  });
}

/** The next page of the same audit query, for the Bundle's `next` link. */
function auditPageUrl(c: Context<AppEnv>, query: AuditQuery & { format: string }, cursor: string): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && name !== 'cursor') params.set(name, String(value));
  }
  params.set('cursor', cursor);
  return `${c.var.deps.config.publicBaseUrl}/admin/audit?${params}`;
}

const ReissueResponse = z
  .object({
    message: z.string(),
    expires_at: z.string().openapi({ example: '2026-11-25T14:03:00.000Z' }),
    access_code: z
      .string()
      .optional()
      .openapi({ description: 'Only when the deployment sets ADMIN_CODE_IN_RESPONSE=true (no mail)' }),
  })
  .openapi('ReissueAccessCodeResponse');

/**
 * A route that takes no body: none, or an empty JSON object (clients send `{}` or a JSON
 * Content-Type with nothing after it). A field is 400, as unknown fields are everywhere.
 */
function assertNoFields(text: string): void {
  if (text.trim() === '') return;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new AppError('invalid_json');
  }
  const fields =
    parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? Object.keys(parsed) : undefined;
  if (fields === undefined)
    throw new AppError('validation_failed', {
      errors: [{ path: '(body)', message: 'must be an empty object, or none' }],
    });
  if (fields.length > 0)
    throw new AppError('validation_failed', {
      errors: fields.map((field) => ({ path: field, message: 'is not an accepted field' })),
    });
}

const reissueRoute = createRoute({
  method: 'post',
  path: '/admin/users/{id}/access-code',
  operationId: 'reissueAccessCode',
  tags: ['admin'],
  summary: "Void a pending account's access code and email a new one",
  security: bearerSecurity,
  middleware: manageUsers,
  request: {
    params: z.object({ id: z.string().min(1).max(64) }),
  },
  responses: {
    202: {
      description: 'A new code was queued for email',
      content: { 'application/json': { schema: ReissueResponse } },
    },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
    404: errorResponses[404],
    409: errorResponses[409],
    413: errorResponses[413],
    415: errorResponses[415],
  },
});

const AuditEntry = z
  .object({
    id: z.string(),
    occurred_at: z.string(),
    action: z.string().openapi({ example: 'provisioning.create' }),
    outcome: z.enum(['success', 'denied', 'failed']),
    error_code: z
      .string()
      .nullable()
      .openapi({ description: 'Why it was refused or failed (an error code, or `out_of_scope`)' }),
    actor: z.object({ user_id: z.string().nullable(), role: z.string().nullable() }),
    target: z.object({
      user_id: z.string().nullable(),
      fhir_type: z.string().nullable(),
      fhir_id: z.string().nullable(),
    }),
    patient_id: z
      .string()
      .nullable()
      .openapi({ description: 'The FHIR Patient whose data was read or refused (access events)' }),
    request_id: z.string().nullable(),
    client_ip: z.string().nullable(),
    detail: z.record(z.string(), z.unknown()).nullable(),
  })
  .openapi('AuditEntry');

const AuditEventBundle = z
  .object({
    resourceType: z.literal('Bundle'),
    type: z.literal('searchset'),
    link: z.array(z.object({ relation: z.string(), url: z.string() })).optional(),
    entry: z.array(
      z.object({
        fullUrl: z.string(),
        resource: z.record(z.string(), z.unknown()).openapi({
          description: 'A FHIR R4 AuditEvent (https://hl7.org/fhir/R4/auditevent.html)',
        }),
      }),
    ),
  })
  .openapi('AuditEventBundle');

const isoTime = z.union([z.iso.datetime({ offset: true }), z.iso.date()], {
  error: 'must be an ISO 8601 date-time with a time zone (2026-11-20T09:30:00Z) or a date (2026-11-20)',
});

const auditRoute = createRoute({
  method: 'get',
  path: '/admin/audit',
  operationId: 'listAuditEntries',
  tags: ['admin'],
  summary: 'The audit trail, newest first',
  security: bearerSecurity,
  middleware: readAudit,
  request: {
    query: z
      .object({
        action: z.string().max(100).optional(),
        outcome: z.enum(['success', 'denied', 'failed']).optional(),
        actor_user_id: z.string().max(64).optional(),
        target_user_id: z.string().max(64).optional(),
        patient: z
          .string()
          .regex(FHIR_ID_PATTERN, 'must be a FHIR id')
          .optional()
          .openapi({ description: "A FHIR Patient id: who read (or tried to read) this patient's data" }),
        error_code: z.string().max(64).optional(),
        format: z.enum(['json', 'fhir']).default('json').openapi({
          description: '`fhir`: a FHIR Bundle of AuditEvents (IHE BALP shape) instead of JSON entries',
        }),
        from: isoTime.optional().openapi({ description: 'Inclusive lower bound (ISO 8601)' }),
        to: isoTime.optional().openapi({ description: 'Exclusive upper bound (ISO 8601)' }),
        limit: pageLimit(200, 50),
        cursor: z.string().max(200).optional().openapi({
          description:
            "The previous page's next_cursor. It marks only the position: send the same filters and limit with it.",
        }),
      })
      .strict(),
  },
  responses: {
    200: {
      description: 'A page of entries (JSON), or with `format=fhir` a Bundle of AuditEvents',
      content: {
        'application/json': {
          schema: z
            .object({ entries: z.array(AuditEntry), next_cursor: z.string().nullable() })
            .openapi('AuditPage'),
        },
        'application/fhir+json': { schema: AuditEventBundle },
      },
    },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
  },
});

const orphansRoute = createRoute({
  method: 'get',
  path: '/admin/provisioning/orphans',
  operationId: 'listProvisioningOrphans',
  tags: ['admin'],
  summary:
    'FHIR resources a failed provisioning could not remove (to reconcile by hand), and creates not settled yet',
  security: bearerSecurity,
  middleware: readAudit,
  // takes no parameters: an unknown one is 400, as on the other admin lists
  request: { query: z.object({}).strict() },
  responses: {
    200: {
      description: 'Unresolved orphans',
      content: {
        'application/json': {
          schema: z
            .object({
              orphans: z.array(
                z.object({
                  id: z.string(),
                  fhir_type: z.string(),
                  fhir_id: z.string(),
                  reason: z.string(),
                  request_id: z.string().nullable(),
                  created_at: z.string(),
                }),
              ),
              unfinished_creates: z
                .array(
                  z.object({
                    intent_id: z.string(),
                    fhir_type: z.string(),
                    created_at: z.string(),
                    attempts: z.number().int(),
                    last_error: z.string().nullable(),
                    request_id: z.string().nullable(),
                    next_attempt_at: z.string(),
                  }),
                )
                .openapi({
                  description:
                    'Creates a crash left open that reconciliation has not settled yet (it retries every 15 s while the FHIR server cannot answer)',
                }),
            })
            .openapi('OrphanList'),
        },
      },
    },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
  },
});

const AdminUser = z
  .object({
    id: z.string(),
    email: z.string(),
    role: z.enum(['admin', 'patient', 'practitioner']),
    fhir_id: z.string().nullable(),
    status: z.enum(['pending', 'expired', 'active', 'deactivated']),
    is_registered: z.boolean(),
    is_active: z.boolean(),
    created_by_admin: z.boolean(),
    created_at: z.string(),
    registered_at: z.string().nullable(),
    last_login_at: z.string().nullable(),
    access_code_expires_at: z.string().nullable(),
    profile: z.record(z.string(), z.string()),
  })
  .openapi('AdminUser');

const UserIdParam = z.object({ id: z.string().min(1).max(64) });

const listUsersRoute = createRoute({
  method: 'get',
  path: '/admin/users',
  operationId: 'listUsers',
  tags: ['admin'],
  summary: 'Accounts, newest first',
  security: bearerSecurity,
  middleware: manageUsers,
  request: {
    query: z
      .object({
        role: z.enum(['admin', 'patient', 'practitioner']).optional(),
        status: z.enum(['pending', 'expired', 'active', 'deactivated']).optional().openapi({
          description: 'pending: waiting for signup with a usable code; expired: code expired or void',
        }),
        email: z
          .string()
          .max(254)
          .optional()
          .openapi({ description: 'Part of the email, any letter case; empty is no filter' }),
        limit: pageLimit(200, 50),
        cursor: z.string().max(200).optional().openapi({
          description:
            "The previous page's next_cursor. It marks only the position: send the same filters and limit with it.",
        }),
      })
      .strict(),
  },
  responses: {
    200: {
      description: 'A page of accounts',
      content: {
        'application/json': {
          schema: z
            .object({ users: z.array(AdminUser), next_cursor: z.string().nullable() })
            .openapi('AdminUserPage'),
        },
      },
    },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
  },
});

const getUserRoute = createRoute({
  method: 'get',
  path: '/admin/users/{id}',
  operationId: 'getUser',
  tags: ['admin'],
  summary: 'One account',
  security: bearerSecurity,
  middleware: manageUsers,
  request: { params: UserIdParam },
  responses: {
    200: { description: 'The account', content: { 'application/json': { schema: AdminUser } } },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
    404: errorResponses[404],
  },
});

const patchUserRoute = createRoute({
  method: 'patch',
  path: '/admin/users/{id}',
  operationId: 'updateUser',
  tags: ['admin'],
  summary: 'Deactivate or reactivate an account (deactivation ends every token at once)',
  security: bearerSecurity,
  middleware: manageUsers,
  request: {
    params: UserIdParam,
    body: {
      required: true,
      content: { 'application/json': { schema: z.object({ active: z.boolean() }).strict() } },
    },
  },
  responses: {
    200: {
      description: 'The account after the change',
      content: { 'application/json': { schema: AdminUser } },
    },
    400: errorResponses[400],
    401: errorResponses[401],
    403: errorResponses[403],
    404: errorResponses[404],
    409: errorResponses[409],
    413: errorResponses[413],
    415: errorResponses[415],
  },
});

export function adminRoutes() {
  const router = createRouter();
  router.openapi(reissueRoute, async (c) => {
    assertNoFields(await c.req.text());
    return c.json(
      await reissueAccessCode(c.var.deps, c.var.caller, requestContext(c), c.req.valid('param').id),
      202,
    );
  });
  router.openapi(listUsersRoute, async (c) => {
    const page = await listUsers(c.var.deps, c.req.valid('query'));
    await auditRead(c, 'users.list');
    return c.json(page, 200);
  });
  router.openapi(getUserRoute, async (c) => {
    const user = await getUser(c.var.deps, c.req.valid('param').id);
    await auditRead(c, 'users.read', user.id);
    return c.json(user, 200);
  });
  router.openapi(patchUserRoute, async (c) =>
    c.json(
      await setUserActive(
        c.var.deps,
        c.var.caller,
        requestContext(c),
        c.req.valid('param').id,
        c.req.valid('json').active,
      ),
      200,
    ),
  );
  router.openapi(auditRoute, async (c) => {
    const query = c.req.valid('query');
    if (query.format === 'fhir') {
      const bundle = await auditEventBundle(c.var.deps, query, (cursor) => auditPageUrl(c, query, cursor));
      await auditRead(c, 'audit.read');
      return c.json(bundle, 200, { 'Content-Type': FHIR_JSON });
    }
    const page = await listAudit(c.var.deps, query);
    await auditRead(c, 'audit.read');
    return c.json(page, 200);
  });
  router.openapi(orphansRoute, async (c) => {
    const orphans = await listOrphans(c.var.deps);
    await auditRead(c, 'provisioning.orphans.read');
    return c.json(orphans, 200);
  });
  return router;
}
