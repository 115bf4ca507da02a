import { beforeAll, describe, expect, it } from 'vitest';
import type { Role } from '../../db/schema.js';
import { SCOPES_BY_ROLE } from '../../src/auth/tokens.js';
import { loadFhirDefinitions } from '../../src/fhir/definitions.js';
import { typesShown } from '../../src/fhir/scopeGuard.js';
import {
  allows,
  describeScope,
  grantableScopes,
  isRegistrableScope,
  missingScope,
  type Permission,
  parseResourceScope,
  parseScopeList,
  permissionOfMethod,
  permissionsToForward,
  scopesOf,
} from '../../src/fhir/smartScopes.js';
import type { Caller } from '../../src/http/types.js';

// whether a scope names an R4 resource type is read from the definitions
beforeAll(() => loadFhirDefinitions());

/** SMART scopes, pure: https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html */

describe('parseResourceScope', () => {
  it.each([
    ['patient/Observation.rs', 'patient', 'Observation', 'rs'],
    ['patient/Observation.read', 'patient', 'Observation', 'rs'],
    ['user/*.write', 'user', '*', 'cud'],
    ['user/*.*', 'user', '*', 'cruds'],
    ['system/Patient.cruds', 'system', 'Patient', 'cruds'],
    ['user/Encounter.cu', 'user', 'Encounter', 'cu'],
    ['patient/*.s', 'patient', '*', 's'],
  ])('reads %s as %s/%s.%s', (scope, context, type, letters) => {
    const parsed = parseResourceScope(scope);
    expect(parsed?.context).toBe(context);
    expect(parsed?.type).toBe(type);
    expect([...(parsed?.permissions ?? [])].sort().join('')).toBe([...letters].sort().join(''));
  });

  it.each([
    ['patient/Observation.sr', 'letters out of cruds order'],
    ['patient/Observation.rr', 'a letter twice'],
    ['patient/Observation.', 'no permission'],
    ['patient/Observation.x', 'an unknown letter'],
    ['practitioner/Observation.rs', 'an unknown context'],
    ['patient/observation.rs', 'a type that is not a FHIR type name'],
    ['patient/Observation.rs?category=laboratory', 'a granular (query) scope: not supported'],
    ['launch/patient', 'a launch scope'],
    ['openid', 'an OpenID scope'],
  ])('refuses %s (%s)', (scope) => {
    expect(parseResourceScope(scope)).toBeUndefined();
  });
});

type Case = [scope: string, type: string, permissions: string, missing: string | undefined];

describe('missingScope: the scope a request lacks', () => {
  it.each<Case>([
    ['patient/Observation.rs', 'Observation', 's', undefined],
    ['patient/Observation.rs', 'Observation', 'r', undefined],
    ['patient/Observation.rs', 'Observation', 'c', 'patient/Observation.c'],
    ['patient/Observation.rs', 'Patient', 'r', 'patient/Patient.r'],
    ['patient/Observation.r', 'Observation', 's', 'patient/Observation.s'],
    ['patient/Observation.read', 'Observation', 's', undefined],
    ['patient/*.rs', 'Condition', 's', undefined],
    ['patient/*.rs openid fhirUser', 'Condition', 'u', 'patient/Condition.u'],
    ['patient/Observation.rs patient/Patient.r', 'Patient', 'r', undefined],
    ['launch/patient openid', 'Observation', 'r', 'patient/Observation.r'],
    ['', 'Observation', 'r', 'patient/Observation.r'],
    ['patient/Observation.rs?category=laboratory', 'Observation', 's', 'patient/Observation.s'],
    // several permissions: all of them, named together
    ['patient/*.rs', '*', 'rs', undefined],
    ['patient/*.rs', '*', 'cruds', 'patient/*.cruds'],
    ['patient/*.cruds', '*', 'cruds', undefined],
    ['patient/*.crs patient/*.ud', '*', 'cruds', undefined],
    ['patient/Observation.cruds', '*', 'cruds', 'patient/*.cruds'],
  ])('%s, %s .%s -> %s', (scope, type, permissions, missing) => {
    const asked = [...permissions] as Permission[];
    expect(missingScope(parseScopeList(scope), 'patient', type, asked)).toBe(missing);
  });

  it('names user/ scopes for practitioners and admins', () => {
    expect(missingScope(parseScopeList('user/Observation.rs'), 'user', 'Observation', ['c'])).toBe(
      'user/Observation.c',
    );
  });

  it.each([
    ['patient', 'Observation', 'r', true],
    ['patient', 'Observation', 's', true],
    ['patient', 'Observation', 'c', false],
    ['practitioner', 'Observation', 'c', true],
    ['practitioner', 'Observation', 'u', true],
    ['practitioner', 'Observation', 'd', false],
    ['admin', 'Observation', 'd', true],
    ['admin', '*', 'c', true],
  ] as const)('the role-wide scope of /auth/login tokens: %s may %s .%s: %s', (role, type, p, expected) => {
    expect(allows(scopesOf(SCOPES_BY_ROLE[role]), type, p)).toBe(expected);
  });

  it('remembers the parse of a scope string', () => {
    expect(scopesOf('user/*.rs')).toBe(scopesOf('user/*.rs'));
  });
});

describe('grantableScopes: asked ∩ registered for the app ∩ allowed for the role', () => {
  const patientRole = `${SCOPES_BY_ROLE.patient} launch/patient openid fhirUser offline_access`;
  const practitionerRole = `${SCOPES_BY_ROLE.practitioner} openid fhirUser offline_access`;
  it.each([
    // asked, app, role, granted, dropped
    ['patient/Observation.rs', 'patient/*.rs', patientRole, ['patient/Observation.rs'], []],
    ['patient/Observation.read', 'patient/*.rs', patientRole, ['patient/Observation.read'], []],
    [
      'patient/Observation.cruds',
      'patient/*.cruds',
      patientRole,
      ['patient/Observation.rs'],
      ['patient/Observation.cruds'],
    ],
    ['patient/*.rs', 'patient/Observation.rs', patientRole, ['patient/Observation.rs'], ['patient/*.rs']],
    // a wildcard registered beside a narrower scope of it: the asked wildcard is granted whole
    ['patient/*.rs', 'patient/*.rs patient/Patient.rs', patientRole, ['patient/*.rs'], []],
    ['patient/*.rs', 'patient/Observation.rs patient/*.rs', patientRole, ['patient/*.rs'], []],
    ['user/*.rs', 'user/*.rs user/Patient.rs', practitionerRole, ['user/*.rs'], []],
    ['patient/*.read', 'patient/*.rs patient/Patient.read', patientRole, ['patient/*.read'], []],
    // narrowed, the wildcard's own part holds the narrower ones
    [
      'patient/*.cruds',
      'patient/*.rs patient/Observation.cruds',
      patientRole,
      ['patient/*.rs'],
      ['patient/*.cruds'],
    ],
    ['patient/Condition.rs', 'patient/Observation.rs', patientRole, [], ['patient/Condition.rs']],
    ['user/*.rs', 'user/*.rs', patientRole, [], ['user/*.rs']],
    ['system/*.rs', 'system/*.rs', practitionerRole, [], ['system/*.rs']],
    ['user/*.cruds', 'user/*.cruds', practitionerRole, ['user/*.crus'], ['user/*.cruds']],
    [
      'launch/patient openid fhirUser',
      'launch/patient openid fhirUser',
      patientRole,
      ['launch/patient', 'openid', 'fhirUser'],
      [],
    ],
    ['launch/patient', 'launch/patient', practitionerRole, [], ['launch/patient']],
    ['offline_access', 'patient/*.rs', patientRole, [], ['offline_access']],
    ['launch profile', 'launch profile', patientRole, [], ['launch', 'profile']],
  ])('%s (app: %s) -> %j', (asked, app, role, granted, dropped) => {
    expect(grantableScopes(asked, app, role)).toEqual({ granted, dropped });
  });
});

describe('helpers', () => {
  it.each([
    ['GET', true, 'r'],
    ['GET', false, 's'],
    ['POST', false, 'c'],
    ['PUT', true, 'u'],
    ['PATCH', true, 'u'],
    ['DELETE', true, 'd'],
  ] as const)('%s (id: %s) needs .%s', (method, hasId, permission) => {
    expect(permissionOfMethod(method, hasId)).toBe(permission);
  });

  // what an admin's forwarded request needs: a batch's or a POSTed operation's entries and answer
  // are not checked type by type, so they need every permission on every type
  it.each<
    [string, { type?: string; id?: string; operation?: string; compartmentType?: string }, string, string]
  >([
    ['GET', { type: 'Patient', id: '1', operation: '$everything' }, 'Patient', 'r'],
    ['GET', { type: 'Patient', operation: '$match' }, 'Patient', 's'],
    ['GET', { operation: '$meta' }, '*', 's'],
    ['GET', { type: 'Patient', id: '1' }, 'Patient', 'r'],
    ['DELETE', { type: 'Observation', id: '1' }, 'Observation', 'd'],
    ['DELETE', { type: 'Observation' }, 'Observation', 'd'],
    ['PUT', { type: 'Observation' }, 'Observation', 'u'],
    ['PATCH', { type: 'Observation', id: '1' }, 'Observation', 'u'],
    ['POST', { type: 'Observation' }, 'Observation', 'c'],
    ['POST', {}, '*', 'cruds'],
    ['DELETE', {}, '*', 'cruds'],
    ['POST', { type: 'Patient', id: '1', operation: '$everything' }, '*', 'cruds'],
    ['POST', { type: 'Observation', operation: '$validate' }, '*', 'cruds'],
    ['POST', { operation: '$graphql' }, '*', 'cruds'],
    // a compartment search reads the Patient (its entries are shown by r on their type); anything else there reaches beyond it
    ['GET', { type: 'Patient', id: '1', compartmentType: 'Observation' }, 'Patient', 'r'],
    ['POST', { type: 'Patient', id: '1', compartmentType: 'Observation' }, '*', 'cruds'],
  ])('%s %j needs %s.%s', (method, target, type, permissions) => {
    expect(permissionsToForward(method, target)).toEqual({ type, permissions: [...permissions] });
  });

  it('needs every permission for a DELETE with _cascade (HAPI deletes what refers to the record too)', () => {
    const cascade = new URLSearchParams('_cascade=delete');
    expect(permissionsToForward('DELETE', { type: 'Patient', id: '1' }, cascade)).toEqual({
      type: '*',
      permissions: [...'cruds'],
    });
    expect(permissionsToForward('DELETE', { type: 'Patient', id: '1' }, new URLSearchParams())).toEqual({
      type: 'Patient',
      permissions: ['d'],
    });
  });

  it.each([
    ['patient/Observation.rs', 'Read and search Observation of your own record'],
    ['user/*.cruds', 'Create, read, update, delete and search all record types that you have access to'],
    [
      'offline_access',
      'Stay connected while you are away (a refresh token, until you log out or it expires)',
    ],
    ['launch', 'Not supported: launch'],
  ])('describes %s in plain words', (scope, words) => {
    expect(describeScope(scope)).toBe(words);
  });

  it.each([
    ['patient/*.rs', true],
    ['offline_access', true],
    ['launch', false],
    ['patient/Observation.rs?code=1', false],
    ['user/Patient.cruds', true],
    ['system/*.cruds', false],
    ['system/Patient.rs', false],
    // a type R4 does not have would be shown on the consent page as if it were one
    ['user/Foo.rs', false],
    ['patient/observation.rs', false],
  ])('may register %s: %s', (scope, ok) => {
    expect(isRegistrableScope(scope)).toBe(ok);
  });
});

describe("typesShown: which entries of a search a token may see (an _include's type needs its own read scope)", () => {
  const callerWith = (role: Role, scope: string) =>
    ({ userId: 'u', role, fhirId: 'f', claims: { scope } }) as unknown as Caller;

  it.each<[Role, string]>([
    ['patient', SCOPES_BY_ROLE.patient],
    ['practitioner', SCOPES_BY_ROLE.practitioner],
    ['admin', SCOPES_BY_ROLE.admin],
    ['patient', 'patient/*.r'],
    ['admin', 'user/*.read'],
  ])('%s with %s: every type (no per-entry check at all)', (role, scope) => {
    expect(typesShown(callerWith(role, scope))).toBeUndefined();
  });

  it.each<[Role, string, string, boolean]>([
    ['patient', 'patient/Observation.rs', 'Observation', true],
    ['patient', 'patient/Observation.rs', 'Patient', false],
    ['patient', 'patient/Observation.s', 'Observation', false],
    ['patient', 'patient/Observation.rs patient/Patient.r', 'Patient', true],
    ['practitioner', 'user/Observation.rs', 'Practitioner', false],
    ['admin', 'user/Patient.rs', 'Observation', false],
    ['admin', 'user/Patient.rs', 'Patient', true],
    ['patient', '', 'Observation', false],
  ])('%s with "%s" is shown %s: %s', (role, scope, type, shown) => {
    expect(typesShown(callerWith(role, scope))?.(type)).toBe(shown);
  });
});
