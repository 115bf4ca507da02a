/** Slim JSON endpoints that happen to live under /fhir (the seed's names for them). */
const SLIM_FHIR_PATHS = new Set(['/fhir/patient', '/fhir/practitioner']);

/** POST /fhir/patient and /fhir/practitioner: the slim JSON API, though under the FHIR base. */
export function isSlimFhirPath(path: string, method: string): boolean {
  return method === 'POST' && SLIM_FHIR_PATHS.has(path);
}

/**
 * Whether a request speaks FHIR: OperationOutcome errors, the FHIR body limit, the SMART token's
 * audience. Everything under /fhir does but the seed's slim create endpoints.
 */
export function isFhirPath(path: string, method = 'GET'): boolean {
  return (path === '/fhir' || path.startsWith('/fhir/')) && !isSlimFhirPath(path, method);
}
