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
  /** false for routes outside /openapi.json (the raw FHIR ones). */
  readonly documented?: false;
  /** A concrete request for the check: path with placeholders filled, and a body if needed. */
  readonly sample?: { readonly path?: string; readonly json?: unknown; readonly freshLogin?: true };
}

export const PROTECTED_ROUTES: readonly ProtectedRoute[] = [
  { method: 'GET', path: '/auth/me', allowed: ['admin', 'patient', 'practitioner'] },
  {
    method: 'POST',
    path: '/auth/password/change',
    allowed: ['admin', 'patient', 'practitioner'],
    sample: { json: {} },
  },
  { method: 'POST', path: '/fhir/patient', allowed: ['admin'], sample: { json: {} } },
  { method: 'POST', path: '/fhir/practitioner', allowed: ['admin'], sample: { json: {} } },
  { method: 'POST', path: '/fhir/Patient', allowed: ['admin'], documented: false, sample: { json: {} } },
  { method: 'POST', path: '/fhir/Practitioner', allowed: ['admin'], documented: false, sample: { json: {} } },
  {
    method: 'POST',
    path: '/admin/users/{id}/access-code',
    allowed: ['admin'],
    sample: { path: '/admin/users/no-such-user/access-code' },
  },
  // logout ends the session it is called with, so it gets a token of its own
  {
    method: 'POST',
    path: '/auth/logout',
    allowed: ['admin', 'patient', 'practitioner'],
    sample: { freshLogin: true },
  },
  { method: 'GET', path: '/admin/users', allowed: ['admin'] },
  {
    method: 'GET',
    path: '/admin/users/{id}',
    allowed: ['admin'],
    sample: { path: '/admin/users/no-such-user' },
  },
  {
    method: 'PATCH',
    path: '/admin/users/{id}',
    allowed: ['admin'],
    sample: { path: '/admin/users/no-such-user', json: { active: true } },
  },
  { method: 'GET', path: '/admin/audit', allowed: ['admin'] },
  { method: 'GET', path: '/patient/observations', allowed: ['patient'] },
  { method: 'GET', path: '/patient/profile', allowed: ['patient'] },
  { method: 'GET', path: '/practitioner/patients', allowed: ['practitioner'] },
  {
    method: 'GET',
    path: '/practitioner/patients/{fhir_id}/observations',
    allowed: ['practitioner'],
    sample: { path: '/practitioner/patients/unknown-patient/observations' },
  },
  { method: 'GET', path: '/admin/provisioning/orphans', allowed: ['admin'] },
  { method: 'GET', path: '/admin/smart-apps', allowed: ['admin'] },
  {
    method: 'POST',
    path: '/admin/smart-apps',
    allowed: ['admin'],
    sample: {
      json: {
        name: 'Matrix app',
        type: 'public',
        redirect_uris: ['https://app.example.com/callback'],
        scopes: ['patient/*.rs'],
      },
    },
  },
  {
    method: 'GET',
    path: '/admin/smart-apps/{client_id}',
    allowed: ['admin'],
    sample: { path: '/admin/smart-apps/no-such-app' },
  },
  {
    method: 'PATCH',
    path: '/admin/smart-apps/{client_id}',
    allowed: ['admin'],
    sample: { path: '/admin/smart-apps/no-such-app', json: { active: true } },
  },
];
