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

/** How long the reduced statement is reused: /fhir/metadata is public, and each build asks the upstream. */
export const CAPABILITY_REUSE_MS = 5 * 60_000;

export interface CapabilityCache {
  /** The reduced statement: reused for CAPABILITY_REUSE_MS, built by one upstream call at a time. */
  get(): Promise<CapabilityStatement>;
}

/**
 * The statement /fhir/metadata answers, asked of the upstream at most once per
 * CAPABILITY_REUSE_MS. Security: the route is public, and a call per request let anonymous
 * callers spend the upstream's connections (against a hung server, 32 of them stalled every
 * user for FHIR_TIMEOUT_MS) and its CPU (HAPI builds a 1.5 MB statement each time). One build
 * runs at a time, whoever asks; past its time the last statement is answered while the next is
 * built, and kept when that build fails.
 */
export function createCapabilityCache(
  build: () => Promise<CapabilityStatement>,
  now: () => number,
): CapabilityCache {
  let kept: { statement: CapabilityStatement; at: number } | undefined;
  let building: Promise<CapabilityStatement> | undefined;
  const rebuild = () => {
    building ??= build()
      .then((statement) => {
        kept = { statement, at: now() };
        return statement;
      })
      .finally(() => {
        building = undefined;
      });
    return building;
  };
  return {
    get: async () => {
      if (!kept) return rebuild();
      if (now() - kept.at >= CAPABILITY_REUSE_MS) rebuild().catch(() => undefined);
      return kept.statement;
    },
  };
}
