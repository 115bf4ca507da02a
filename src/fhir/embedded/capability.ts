import { getResourceTypes } from '@medplum/core';
import type {
  CapabilityStatement,
  CapabilityStatementRestResource,
  CapabilityStatementRestResourceInteraction,
  ResourceType,
} from '@medplum/fhirtypes';
import { SUBSETTED } from './elements.js';
import { supportedSearchParameters } from './search.js';

const RESOURCE_INTERACTIONS: CapabilityStatementRestResourceInteraction['code'][] = [
  'read',
  'vread',
  'update',
  'patch',
  'delete',
  'history-instance',
  'create',
  'search-type',
];

/**
 * The server's CapabilityStatement, generated from the indexed R4 definitions. It lists only the
 * search parameters this server matches correctly, and no documentation or definition URLs per
 * parameter, to stay small (one entry per resource type).
 * @see https://hl7.org/fhir/R4/capabilitystatement.html
 */
export function buildCapabilityStatement(baseUrl: string, date: Date): CapabilityStatement {
  return {
    ...statementHead(baseUrl, date),
    rest: [
      {
        mode: 'server',
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
        resource: resourceTypes().map(describeResourceType),
      },
    ],
  };
}

/**
 * The statement `metadata?_summary=true` answers (R4 search.html#summary): only the elements R4
 * marks Σ, at every level, so a resource entry keeps its type and loses its interactions and
 * search parameters, and the statement is tagged SUBSETTED. Every readiness probe of the gateway
 * asks for it: ~5 KB, and no search parameters to collect, where the whole statement is ~146 KB.
 */
export function buildCapabilitySummary(baseUrl: string, date: Date): CapabilityStatement {
  return {
    ...statementHead(baseUrl, date),
    meta: { tag: [{ ...SUBSETTED }] },
    rest: [{ mode: 'server', resource: resourceTypes().map((type) => ({ type })) }],
  };
}

/** The elements the whole statement and its summary share: all of them Σ. */
function statementHead(baseUrl: string, date: Date): CapabilityStatement {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: date.toISOString(),
    kind: 'instance',
    software: { name: 'fhir-facade embedded FHIR server' },
    implementation: {
      description: 'In-memory FHIR R4 server (Medplum FhirRouter) persisted to a SQLite journal',
      url: baseUrl,
    },
    fhirVersion: '4.0.1',
    format: ['json'],
  };
}

function resourceTypes(): ResourceType[] {
  return [...getResourceTypes()].sort();
}

function describeResourceType(type: ResourceType): CapabilityStatementRestResource {
  return {
    type,
    interaction: RESOURCE_INTERACTIONS.map((code) => ({ code })),
    versioning: 'versioned-update',
    readHistory: true,
    updateCreate: true,
    conditionalRead: 'full-support',
    conditionalCreate: true,
    conditionalUpdate: true,
    conditionalDelete: 'single',
    searchParam: supportedSearchParameters(type)
      .map((param) => ({ name: param.code ?? '', type: param.type }))
      .sort((a, b) => a.name.localeCompare(b.name)),
  };
}
