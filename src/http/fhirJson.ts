/** The media type of every FHIR answer the gateway gives (FHIR R4 http.html#mime-type). */
export const FHIR_JSON = 'application/fhir+json; charset=utf-8';

/**
 * A FHIR answer: JSON text as FHIR JSON, or no body at all (`Prefer: return=minimal`, 204, 304),
 * which then names no media type either (RFC 9110 section 8.3: Content-Type describes content).
 */
export function fhirJson(
  body: string | undefined,
  status: number,
  headers: Record<string, string>,
): Response {
  if (status === 304 || body === undefined || body === '') {
    const { 'Content-Type': _none, ...others } = headers;
    return new Response(null, { status, headers: others });
  }
  return new Response(body, { status, headers: { 'Content-Type': FHIR_JSON, ...headers } });
}
