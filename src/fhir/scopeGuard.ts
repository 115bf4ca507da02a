import { SCOPES_BY_ROLE } from '../auth/tokens.js';
import { AppError } from '../errors.js';
import type { Caller } from '../http/types.js';
import type { ScopedFhir } from './scopedFhir.js';
import { allows, missingScope, type Permission, permissionsToForward, scopesOf } from './smartScopes.js';

const VERB: Readonly<Record<Permission, string>> = {
  c: 'create',
  r: 'read',
  u: 'update',
  d: 'delete',
  s: 'search',
};

/**
 * 403 naming the scope the token lacks, with the RFC 6750 section 3.1 challenge
 * (`error="insufficient_scope"`, `scope=`), as SMART asks of a resource server.
 */
function insufficientScope(missing: string, permissions: readonly Permission[], type: string): AppError {
  const what =
    type === '*' || permissions.length > 1
      ? 'this interaction'
      : `${VERB[permissions[0] as Permission]} of ${type}`;
  return new AppError('insufficient_scope', {
    detail: `The token's scopes do not allow ${what}: it needs ${missing}.`,
    headers: {
      'WWW-Authenticate': `Bearer realm="fhir-facade", error="insufficient_scope", scope="${missing}"`,
    },
  });
}

/**
 * 403 unless the token's scopes allow every one of `permissions` on `type`; the 403 names them all
 * (`user/*.cruds`). What the role itself may never do is left to the role's own refusal: the
 * scopes only narrow what the role allows. Every path that reaches FHIR data with a token calls
 * this: the scoped access through `guardScopes` (passthrough and slim endpoints), provisioning directly.
 */
export function assertScope(caller: Caller, type: string, ...permissions: Permission[]): void {
  const roleWide = scopesOf(SCOPES_BY_ROLE[caller.role]);
  const asked = permissions.filter((p) => allows(roleWide, type, p));
  if (asked.length === 0) return;
  const context = caller.role === 'patient' ? 'patient' : 'user';
  const missing = missingScope(scopesOf(caller.claims.scope ?? ''), context, type, asked);
  if (missing) throw insufficientScope(missing, asked, type);
}

/**
 * The resource types a token may be shown, or undefined when it may be shown every type its
 * role can reach (tokens of /auth/login; apps granted `*.r`). A search checks its own type once;
 * the entries it brings along (`_include`, `_revinclude`) need the token's read scope on their
 * own type, else an app granted `Observation.rs` would read the Patient without `Patient.r`.
 */
export function typesShown(caller: Caller): ((type: string) => boolean) | undefined {
  const scopes = scopesOf(caller.claims.scope ?? '');
  if (allows(scopes, '*', 'r')) return undefined;
  const roleWide = scopesOf(SCOPES_BY_ROLE[caller.role]);
  // a type the role itself never reads is left to the role's own check (compartment.ts)
  return (type) => !allows(roleWide, type, 'r') || allows(scopes, type, 'r');
}

/**
 * Wraps a scoped FHIR access so every interaction first checks the caller's token scopes
 * (src/fhir/smartScopes.ts) — on top of, never instead of, the role's compartment. One check per
 * interaction: read/vread/history need `r`, search/page `s`, create `c`, update `u`; anything
 * forwarded (admins only) as permissionsToForward says: by its method, and a batch or an
 * operation by POST every permission on every type. The scope string is
 * parsed once per distinct string (cached), so this costs a look-up and a loop per request.
 * What the role itself may never do (a patient's write, a practitioner's DELETE) is left to the
 * role's own refusal (`403 forbidden`, as before): the scopes only narrow what the role allows.
 */
export function guardScopes(fhir: ScopedFhir): ScopedFhir {
  const need = (type: string, permission: Permission) => assertScope(fhir.caller, type, permission);
  return {
    caller: fhir.caller,
    scope: fhir.scope,
    read: (type, id, conditional) => {
      need(type, 'r');
      return fhir.read(type, id, conditional);
    },
    vread: (type, id, versionId) => {
      need(type, 'r');
      return fhir.vread(type, id, versionId);
    },
    history: (of, query, route) => {
      need(of.type ?? '*', of.id ? 'r' : 's');
      return fhir.history(of, query, route);
    },
    historyPage: (cursor, of, route) => {
      need(of.type ?? '*', of.id ? 'r' : 's');
      return fhir.historyPage(cursor, of, route);
    },
    assertPatientInScope: (patientId, attempted) => {
      // whether a patient is the caller's tells of that Patient, as its read would
      need('Patient', 'r');
      return fhir.assertPatientInScope(patientId, attempted);
    },
    search: (type, query, route) => {
      need(type, 's');
      return fhir.search(type, query, route);
    },
    page: (cursor, type, route) => {
      need(type, 's');
      return fhir.page(cursor, type, route);
    },
    create: (type, body) => {
      need(type, 'c');
      return fhir.create(type, body);
    },
    update: (type, id, body, ifMatch) => {
      need(type, 'u');
      return fhir.update(type, id, body, ifMatch);
    },
    forward: (request, target) => {
      const { type, permissions } = permissionsToForward(request.method, target, request.query);
      assertScope(fhir.caller, type, ...permissions);
      return fhir.forward(request, target);
    },
  };
}
