import type { MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import type { Role } from '../../db/schema.js';
import { writeAudit } from '../audit/auditService.js';
import { auditedError } from '../audit/requestAudit.js';
import { type Permission, rolesFor } from '../auth/rbac.js';
import { AppError } from '../errors.js';
import type { AppEnv } from '../http/types.js';

/**
 * Refuses (403) a caller whose role is not listed. Runs after `authenticate`. A denial is
 * audited, so probing for admin functions leaves a trail.
 */
export function requireRole(...roles: readonly Role[]): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const caller = c.get('caller');
    if (!roles.includes(caller.role)) {
      await writeAudit(c.get('deps').db, c.get('deps').clock, {
        action: 'access.denied',
        outcome: 'denied',
        errorCode: 'forbidden',
        actorUserId: caller.userId,
        actorRole: caller.role,
        requestId: c.get('requestId'),
        clientIp: c.get('clientIp'),
        detail: { method: c.req.method, route: routePath(c, -1) },
      });
      throw auditedError(new AppError('forbidden'));
    }
    await next();
  };
}

/** `requireRole` for the roles that hold a permission in rbac.ts. */
export function requirePermission(permission: Permission): MiddlewareHandler<AppEnv> {
  return requireRole(...rolesFor(permission));
}
