import { describe, expect, it } from 'vitest';
import { fhirAction } from '../../src/audit/requestAudit.js';
import { isFhirPath, isSlimFhirPath } from '../../src/http/fhirPaths.js';
import { isWellFormedQuery } from '../../src/http/percentEncoding.js';

/** Pure functions that read a request's method and path: which API it speaks, what the audit calls it. */

describe('which requests speak FHIR', () => {
  it.each([
    ['GET', '/fhir', true],
    ['GET', '/fhir/metadata', true],
    ['POST', '/fhir', true],
    ['POST', '/fhir/Patient', true],
    ['GET', '/fhir/Patient/1', true],
    // the seed's slim create endpoints: problem details, the 64 KiB limit, JSON only
    ['POST', '/fhir/patient', false],
    ['POST', '/fhir/practitioner', false],
    // the same paths under other methods are the passthrough's (it answers them 404 or 405 in FHIR)
    ['GET', '/fhir/patient', true],
    ['PUT', '/fhir/practitioner', true],
    ['POST', '/fhir/patient/1', true],
    ['GET', '/fhirx', false],
    ['GET', '/patient/observations', false],
    ['POST', '/auth/login', false],
  ])('%s %s speaks FHIR: %s', (method, path, fhir) => {
    expect(isFhirPath(path, method)).toBe(fhir);
    expect(isSlimFhirPath(path, method)).toBe(path.startsWith('/fhir/') && !fhir);
  });
});

describe('the FHIR interaction the audit names a request by', () => {
  it.each([
    ['GET', '', 'fhir.search'],
    ['POST', '', 'fhir.batch'],
    ['GET', 'Patient', 'fhir.search'],
    ['POST', 'Patient/_search', 'fhir.search'],
    ['GET', 'Patient/1', 'fhir.read'],
    ['GET', 'Patient/1/_history', 'fhir.read'],
    ['GET', 'Patient/1/_history/2', 'fhir.read'],
    ['HEAD', 'Patient/1', 'fhir.read'],
    ['GET', 'Patient/1/Observation', 'fhir.search'],
    ['GET', 'Patient/1/$everything', 'fhir.operation'],
    ['POST', 'Patient/$validate', 'fhir.operation'],
    ['POST', 'Patient', 'fhir.create'],
    ['PUT', 'Patient/1', 'fhir.update'],
    ['PATCH', 'Patient/1', 'fhir.patch'],
    ['DELETE', 'Patient/1', 'fhir.delete'],
    ['OPTIONS', 'Patient', 'fhir.request'],
  ])('%s /fhir/%s is %s', (method, path, action) => {
    expect(fhirAction(method, path.split('/').filter(Boolean))).toBe(action);
  });
});

describe('a well-formed query (RFC 3986 section 2.1, UTF-8)', () => {
  it.each([
    ['', true],
    ['name=Ann', true],
    ['name=Ann%20Lee&birthdate=ge2000-01-01', true],
    ['name=Zo%C3%AB', true],
    ['name=%F0%9F%98%80', true],
    ['name=a+b', true],
    // a lone surrogate (CESU-8), a byte that starts nothing, a cut sequence, a bare %
    ['name=%ED%A0%80', false],
    ['name=%FF', false],
    ['name=Ann%E0%A4', false],
    ['name=100%', false],
    ['name=%ZZ', false],
    ['name=%C3%28', false],
  ])('%j is well-formed: %s', (query, wellFormed) => {
    expect(isWellFormedQuery(query)).toBe(wellFormed);
  });
});
