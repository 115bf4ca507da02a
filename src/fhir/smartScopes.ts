import { isResourceType } from '@medplum/core';
/**
 * SMART on FHIR scopes, pure: parse, decide, intersect, describe
 * (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).
 *
 * A resource scope is `{context}/{type}.{permissions}`: context `patient`, `user` or `system`;
 * type a FHIR resource type or `*`; permissions SMART v2 `cruds` letters in that order (any
 * subset) or SMART v1 `read` (= `rs`), `write` (= `cud`), `*` (= `cruds`). v2 granular scopes
 * with a query (`patient/Observation.rs?category=laboratory`) are not supported: they parse as
 * nothing, so they are never granted and never allow anything.
 *
 * Every token carries its scopes: one rule serves the SMART apps' tokens and the tokens of
 * /auth/login, whose scopes are role-wide (`SCOPES_BY_ROLE` in src/auth/tokens.ts).
 */

export type ScopeContext = 'patient' | 'user' | 'system';
/** create, read, update, delete, search: the SMART v2 letters. */
export type Permission = 'c' | 'r' | 'u' | 'd' | 's';

export const PERMISSIONS: readonly Permission[] = ['c', 'r', 'u', 'd', 's'];

export interface ResourceScope {
  readonly context: ScopeContext;
  /** A resource type, or `*` for every type. */
  readonly type: string;
  readonly permissions: ReadonlySet<Permission>;
  /** The scope as it was written. */
  readonly raw: string;
}

export interface ParsedScopes {
  readonly resources: readonly ResourceScope[];
  /** Every other scope (`openid`, `fhirUser`, `launch/patient`, `offline_access`, unknown ones). */
  readonly other: ReadonlySet<string>;
}

/** Scopes a SMART app may ask for besides resource scopes, and what the gateway supports of them. */
export const SUPPORTED_OTHER_SCOPES: readonly string[] = [
  'launch/patient',
  'openid',
  'fhirUser',
  'offline_access',
];

const RESOURCE_SCOPE = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]{1,63})\.([a-z*]+)$/;
const V1_PERMISSIONS: Readonly<Record<string, string>> = { read: 'rs', write: 'cud', '*': 'cruds' };
const V2_ORDER = /^c?r?u?d?s?$/;

/** One resource scope, or undefined when it is not one (or one we do not support). */
export function parseResourceScope(scope: string): ResourceScope | undefined {
  const match = RESOURCE_SCOPE.exec(scope);
  if (!match) return undefined;
  const [, context, type, suffix] = match as unknown as [string, ScopeContext, string, string];
  const letters = V1_PERMISSIONS[suffix] ?? suffix;
  // v2 letters must be in cruds order, each at most once, at least one
  if (letters.length === 0 || !V2_ORDER.test(letters)) return undefined;
  return { context, type, permissions: new Set(letters as Iterable<Permission>), raw: scope };
}

/** A scope string split into resource scopes and the rest; duplicates and empty parts ignored. */
export function parseScopeList(scope: string): ParsedScopes {
  const resources: ResourceScope[] = [];
  const other = new Set<string>();
  for (const part of new Set(scope.split(' '))) {
    if (!part) continue;
    const parsed = parseResourceScope(part);
    if (parsed) resources.push(parsed);
    else other.add(part);
  }
  return { resources, other };
}

const CACHE_LIMIT = 1000;
const cache = new Map<string, ParsedScopes>();

/**
 * The parse of a token's scope string, remembered: a /fhir request costs a map look-up, not a
 * parse. Tokens share a handful of scope strings (one per role, a few per app), so the bound
 * is only a guard against a flood of distinct ones.
 */
export function scopesOf(scope: string): ParsedScopes {
  let parsed = cache.get(scope);
  if (!parsed) {
    if (cache.size >= CACHE_LIMIT) cache.clear();
    parsed = parseScopeList(scope);
    cache.set(scope, parsed);
  }
  return parsed;
}

/** The v2 spelling of a permission set: `rs`, `cruds`. */
/** A resource scope in its v2 spelling, `{context}/{type}.{letters in cruds order}`. */
function v2Form(scope: Pick<ResourceScope, 'context' | 'type' | 'permissions'>): string {
  return `${scope.context}/${scope.type}.${permissionString(scope.permissions)}`;
}

function permissionString(permissions: ReadonlySet<Permission>): string {
  return PERMISSIONS.filter((p) => permissions.has(p)).join('');
}

/**
 * Whether the scopes allow `permission` on `type`: some scope names the type or `*` and has the
 * letter. The context (patient, user, system) does not widen anything here: what a caller may
 * reach is their role's compartment (compartment.ts), and the scopes only narrow it.
 */
export function allows(scopes: ParsedScopes, type: string, permission: Permission): boolean {
  return scopes.resources.some((s) => (s.type === '*' || s.type === type) && s.permissions.has(permission));
}

/**
 * The scope a request lacks, named as the 403 says it (`patient/Observation.s`; `user/*.cruds`
 * when it needs several permissions), or undefined when the scopes allow every one of them.
 * `context` is the caller's: `patient` for patients, else `user`.
 */
export function missingScope(
  scopes: ParsedScopes,
  context: ScopeContext,
  type: string,
  permissions: readonly Permission[],
): string | undefined {
  return permissions.every((p) => allows(scopes, type, p))
    ? undefined
    : `${context}/${type}.${permissions.join('')}`;
}

function intersectOne(a: ResourceScope, b: ResourceScope): ResourceScope | undefined {
  if (a.context !== b.context) return undefined;
  const type = a.type === '*' ? b.type : b.type === '*' || b.type === a.type ? a.type : undefined;
  if (!type) return undefined;
  const permissions = new Set(PERMISSIONS.filter((p) => a.permissions.has(p) && b.permissions.has(p)));
  if (permissions.size === 0) return undefined;
  return { context: a.context, type, permissions, raw: v2Form({ context: a.context, type, permissions }) };
}

/** Every (context, type, letter) that both lists allow, merged per context and type. */
function intersectResources(a: readonly ResourceScope[], b: readonly ResourceScope[]): ResourceScope[] {
  const merged = new Map<string, { context: ScopeContext; type: string; permissions: Set<Permission> }>();
  for (const x of a) {
    for (const y of b) {
      const both = intersectOne(x, y);
      if (!both) continue;
      const key = `${both.context}/${both.type}`;
      const entry = merged.get(key) ?? { context: both.context, type: both.type, permissions: new Set() };
      for (const p of both.permissions) entry.permissions.add(p);
      merged.set(key, entry);
    }
  }
  return [...merged.values()].map((e) => ({
    ...e,
    raw: v2Form(e),
  }));
}

/** The scopes no wildcard scope of the same context in the list holds already. */
function withoutCovered(scopes: readonly ResourceScope[]): ResourceScope[] {
  const covers = (wide: ResourceScope, narrow: ResourceScope) =>
    wide !== narrow &&
    wide.type === '*' &&
    wide.context === narrow.context &&
    [...narrow.permissions].every((p) => wide.permissions.has(p));
  return scopes.filter((narrow) => !scopes.some((wide) => covers(wide, narrow)));
}

export interface Grantable {
  /** What the token gets: the scopes as asked when fully allowed, else their narrowed v2 form. */
  readonly granted: readonly string[];
  /** What was asked and not granted, at all or in part (for the consent page). */
  readonly dropped: readonly string[];
}

/**
 * The scopes a grant gets: the intersection of what the app asked for, what it is registered
 * for and what the user's role allows (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html#scopes-for-requesting-fhir-resources
 * leaves the policy to the server). A resource scope is intersected letter by letter and type
 * by type (`patient/*.cruds` asked, `patient/Observation.rs` registered -> `patient/Observation.rs`);
 * any other scope is granted only when all three name it and the gateway supports it.
 */
export function grantableScopes(requested: string, allowedForApp: string, allowedForRole: string): Grantable {
  const asked = parseScopeList(requested);
  const app = parseScopeList(allowedForApp);
  const role = parseScopeList(allowedForRole);
  const granted: string[] = [];
  const dropped: string[] = [];
  for (const scope of asked.resources) {
    const result = withoutCovered(
      intersectResources(intersectResources([scope], app.resources), role.resources),
    );
    // every result lies within the asked scope: one equal to it is the whole (an app registered
    // for patient/*.rs and patient/Patient.rs, asked patient/*.rs, gets patient/*.rs)
    if (result.some((narrowed) => narrowed.raw === v2Form(scope))) granted.push(scope.raw);
    else {
      for (const narrowed of result) granted.push(narrowed.raw);
      dropped.push(scope.raw);
    }
  }
  for (const scope of asked.other) {
    const ok = SUPPORTED_OTHER_SCOPES.includes(scope) && app.other.has(scope) && role.other.has(scope);
    (ok ? granted : dropped).push(scope);
  }
  return { granted: [...new Set(granted)], dropped };
}

/** Whether a scope may be registered for an app: a resource scope or a supported other one. */
export function isRegistrableScope(scope: string): boolean {
  // system/ scopes are never granted (no backend services): registering one would promise what no token carries
  const parsed = parseResourceScope(scope);
  if (!parsed) return SUPPORTED_OTHER_SCOPES.includes(scope);
  return parsed.context !== 'system' && (parsed.type === '*' || Boolean(isResourceType(parsed.type)));
}

/** A scope in one spelling: `patient/*.read` and `patient/*.rs` are one scope. */
export function canonicalScope(scope: string): string {
  const parsed = parseResourceScope(scope);
  return parsed ? v2Form(parsed) : scope;
}

const VERBS: Readonly<Record<Permission, string>> = {
  c: 'create',
  r: 'read',
  u: 'update',
  d: 'delete',
  s: 'search',
};

/** "read and search", "create, read and update". */
function verbList(permissions: ReadonlySet<Permission>): string {
  const verbs = PERMISSIONS.filter((p) => permissions.has(p)).map((p) => VERBS[p]);
  return verbs.length <= 1 ? (verbs[0] ?? '') : `${verbs.slice(0, -1).join(', ')} and ${verbs.at(-1)}`;
}

/** A scope in plain words, for the consent page. */
export function describeScope(scope: string): string {
  switch (scope) {
    case 'launch/patient':
      return 'Know which patient record is yours (your Patient id)';
    case 'openid':
      return 'Confirm that it is you who signed in';
    case 'fhirUser':
      return 'Know your FHIR record (Patient or Practitioner) as your identity';
    case 'offline_access':
      return 'Stay connected while you are away (a refresh token, until you log out or it expires)';
  }
  const parsed = parseResourceScope(scope);
  if (!parsed) return `Not supported: ${scope}`;
  const what = parsed.type === '*' ? 'all record types' : parsed.type;
  const whose =
    parsed.context === 'patient'
      ? 'of your own record'
      : parsed.context === 'user'
        ? 'that you have access to'
        : 'of the whole system';
  const verbs = verbList(parsed.permissions);
  return `${verbs.charAt(0).toUpperCase()}${verbs.slice(1)} ${what} ${whose}`;
}

/**
 * What an admin's forwarded request needs of the token's scopes: its method's permission on its
 * type (`*` at system level); a compartment search (`Patient/1/Observation`) is a read of the
 * Patient, its entries shown by `r` on their own type. A batch or transaction, an operation invoked with another method than GET,
 * any other method on a compartment path, and a DELETE with `_cascade` (HAPI then deletes what
 * refers to the record, of any type) reach types their path does not name, and their answers are
 * not held to the scopes type by type (a GET's are): they need every permission on every type,
 * deny by default.
 */
export function permissionsToForward(
  method: string,
  target: { type?: string; id?: string; operation?: string; compartmentType?: string },
  query?: URLSearchParams,
): { type: string; permissions: readonly Permission[] } {
  const reading = method === 'GET' || method === 'HEAD';
  const cascading = method === 'DELETE' && query?.has('_cascade') === true;
  const beyondItsType =
    target.type === undefined || target.operation !== undefined || target.compartmentType !== undefined;
  if (cascading || (!reading && beyondItsType)) return { type: '*', permissions: PERMISSIONS };
  return { type: target.type ?? '*', permissions: [permissionOfMethod(method, target.id !== undefined)] };
}

/** The permission an HTTP method needs on a FHIR interaction that is not a read or search. */
export function permissionOfMethod(method: string, hasId: boolean): Permission {
  switch (method) {
    case 'GET':
    case 'HEAD':
      return hasId ? 'r' : 's';
    case 'PUT':
    case 'PATCH':
      return 'u';
    case 'DELETE':
      return 'd';
    default:
      return 'c';
  }
}
