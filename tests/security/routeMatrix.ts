import type { Role } from '../../db/schema.js';

/**
 * Every protected route and the roles allowed on it. The RBAC matrix test runs each against
 * anonymous, patient, practitioner and admin callers, and fails if the app serves a protected
 * route that is missing here. Later issues add their routes to this list.
 */
export interface ProtectedRoute {
  readonly method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
  /** The OpenAPI path, e.g. `/admin/users/{id}`. */
  readonly path: string;
  readonly allowed: readonly Role[];
  /** A concrete request for the check: path with placeholders filled, and a body if needed. */
  readonly sample?: { readonly path?: string; readonly json?: unknown };
}

export const PROTECTED_ROUTES: readonly ProtectedRoute[] = [
  { method: 'GET', path: '/auth/me', allowed: ['admin', 'patient', 'practitioner'] },
];
