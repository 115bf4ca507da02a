import type { Role } from '../../db/schema.js';

/** The roles, and which role may do what: data, read by `requirePermission`. */
export const ROLES: readonly Role[] = ['admin', 'patient', 'practitioner'];

export const PERMISSIONS = {
  'account:read-own': ['admin', 'patient', 'practitioner'],
  'users:provision': ['admin'],
  'users:manage': ['admin'],
  'audit:read': ['admin'],
  'smart-apps:manage': ['admin'],
  'observations:read-own': ['patient'],
  'patients:read-assigned': ['practitioner'],
} as const satisfies Record<string, readonly Role[]>;

export type Permission = keyof typeof PERMISSIONS;

export function rolesFor(permission: Permission): readonly Role[] {
  return PERMISSIONS[permission];
}
