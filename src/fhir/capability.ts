import type { CapabilityStatement, CapabilityStatementRestResource } from '@medplum/fhirtypes';
import type { AppDeps } from '../http/types.js';
import { smartSecurity } from '../oauth/smartConfiguration.js';
import { fhirBaseOf } from '../oauth/urls.js';
import { isPractitionerWritable, LINKING_PARAMS } from './compartment.js';
import { isScopedSearchParam } from './searchPolicy.js';

/** Interactions the gateway lets scoped roles use (admins get the upstream's full surface). */
const SCOPED_READS = new Set(['read', 'vread', 'search-type', 'history-instance']);
/** What practitioners may also do, on the types they may write (compartment.ts). */
const SCOPED_WRITES = new Set(['create', 'update']);

/** The objects of an upstream list: what is not a list, or not an object in it, is left out (never a 500). */
function objectsIn(value: unknown): Record<string, unknown>[] {
  if (!Array.isArray(value)) return [];
  return value.filter(
    (v): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v),
  );
}

const text = (value: unknown): value is string => typeof value === 'string';

/** One type's entry, cut to what the gateway allows: only the fields it names, read only where they have their R4 type. */
function reduceResource(
  resource: Record<string, unknown> & { type: string },
): CapabilityStatementRestResource {
  const writable = isPractitionerWritable(resource.type);
  const allowed = (code: string) => SCOPED_READS.has(code) || (writable && SCOPED_WRITES.has(code));
  return {
    type: resource.type as CapabilityStatementRestResource['type'],
    interaction: objectsIn(resource.interaction)
      .map((i) => i.code)
      .filter((code): code is string => text(code) && allowed(code))
      .map((code) => ({ code }) as NonNullable<CapabilityStatementRestResource['interaction']>[number]),
    searchParam: objectsIn(resource.searchParam)
      .filter((p) => text(p.name) && text(p.type) && isScopedSearchParam(p.name))
      .map(
        (p) =>
          ({ name: p.name, type: p.type }) as NonNullable<
            CapabilityStatementRestResource['searchParam']
          >[number],
      ),
  };
}

/**
 * GET /fhir/metadata: the upstream CapabilityStatement reduced to what the gateway allows,
 * under the gateway's own name, with a security section for bearer tokens.
 * https://hl7.org/fhir/R4/capabilitystatement.html
 */
export async function capabilityStatement(deps: AppDeps): Promise<CapabilityStatement> {
  const upstream = await deps.fhir.capabilities();
  const visible = (type: string) =>
    deps.config.fhir.directoryTypes.has(type) || type === 'Patient' || LINKING_PARAMS.has(type);
  const [rest] = objectsIn(upstream.rest);
  const resources = objectsIn(rest?.resource)
    .filter((r): r is Record<string, unknown> & { type: string } => text(r.type) && visible(r.type))
    .map(reduceResource);
  const publicFhirBase = fhirBaseOf(deps.config);
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: deps.clock.now().toISOString(),
    kind: 'instance',
    software: { name: 'fhir-facade' },
    implementation: { description: `${deps.config.appName} FHIR gateway`, url: publicFhirBase },
    fhirVersion:
      text(upstream.fhirVersion) && /^4\.0\.\d+$/.test(upstream.fhirVersion) ? upstream.fhirVersion : '4.0.1',
    format: ['json'],
    rest: [
      {
        mode: 'server',
        documentation:
          'A filtered passthrough. Patients read their own compartment; practitioners read and write the compartments of their assigned patients; admins have the full upstream surface. See /docs.',
        security: {
          // SMART App Launch: the oauth-uris extension (https://hl7.org/fhir/smart-app-launch/conformance.html)
          extension: smartSecurity(deps.config).extension,
          // true only when browsers from some origin get CORS headers (CORS_ORIGINS is not empty)
          cors: deps.config.corsOrigins.length > 0,
          service: [
            {
              coding: [
                { system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'OAuth' },
              ],
              text: 'Bearer token',
            },
            smartSecurity(deps.config).service,
          ],
          description: `Send "Authorization: Bearer <token>" with an access token from ${deps.config.publicBaseUrl}/auth/login (ES256 JWT; keys at /.well-known/jwks.json), or from a SMART App Launch (${deps.config.publicBaseUrl}/fhir/.well-known/smart-configuration).`,
        },
        resource: resources,
      },
    ],
  };
}
