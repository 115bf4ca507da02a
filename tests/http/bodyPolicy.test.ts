import { describe, expect, it } from 'vitest';
import { type BodyRule, bodyRuleFor } from '../../src/middleware/bodyPolicy.js';

describe('the body rule of a request', () => {
  it.each<[string, string, BodyRule]>([
    ['GET', '/auth/me', 'none'],
    ['HEAD', '/fhir/Patient', 'none'],
    ['OPTIONS', '/auth/login', 'none'],
    ['POST', '/fhir/Patient', 'fhir'],
    ['PUT', '/fhir/Observation/1', 'fhir'],
    ['POST', '/fhir', 'fhir'],
    // the slim create endpoints under /fhir are the JSON API, not FHIR
    ['POST', '/fhir/patient', 'json'],
    ['POST', '/fhir/practitioner', 'json'],
    ['PUT', '/fhir/patient', 'fhir'],
    ['POST', '/auth/login', 'json'],
    ['PATCH', '/admin/users/1', 'json'],
    ['DELETE', '/admin/smart-apps/x', 'json'],
    ['POST', '/oauth/token', 'protocol'],
    // the SMART login and consent pages post forms, limited as slim bodies
    ['POST', '/oauth/interaction/abc/login', 'slim'],
    ['POST', '/nowhere', 'slim'],
  ])('%s %s: %s', (method, path, rule) => {
    expect(bodyRuleFor(path, method)).toBe(rule);
  });
});
