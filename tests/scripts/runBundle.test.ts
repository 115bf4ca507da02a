import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as esbuild from 'esbuild';
import { afterEach, describe, expect, it } from 'vitest';
import { asciiOnly } from '../../scripts/build.mjs';
import { SERVING_EVENT } from '../../scripts/runBundle.mjs';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
/** How scripts/build.mjs begins the bundle: Node's CommonJS wrapper, and the import() runBundle hands it. */
const BUNDLE_WRAPPER = '(function (exports, require, module, __filename, __dirname, __importEsm) { ';
const RUN_BUNDLE = path.join(ROOT, 'scripts/runBundle.mjs');

let dir = '';
afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = '';
});

interface BundleShape {
  /** How long the process stays up after it starts (its cache is made meanwhile). */
  readonly aliveMs: number;
  /** Whether it says it serves, as src/main.ts does once a serving process listens. */
  readonly serves?: boolean;
}

/**
 * A bundle as scripts/build.mjs writes it (inside the function Node wraps a CommonJS file in) that
 * reports what a required file sees.
 */
function writeBundle({ aliveMs, serves = true }: BundleShape): string {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-bundle-'));
  const bundle = path.join(dir, 'gateway-test.cjs');
  const code = `const os = require('node:os');
    const helper = (n) => n * 2;
    module.exports.answer = helper(21);
    process.stdout.write(JSON.stringify({
      filename: __filename, dirname: __dirname, answer: module.exports.answer,
      requires: typeof require('node:path').join, hostname: typeof os.hostname(),
    }) + '\\n');
    // after runBundle's answer: an import() through the function handed in, which a cached
    // script's own import() could not do on Node 20
    __importEsm('node:os').then((m) => process.stdout.write(JSON.stringify({ imported: typeof m.hostname }) + '\\n'));
    ${serves ? `process.emit(${JSON.stringify(SERVING_EVENT)});` : ''}
    setTimeout(() => {}, ${aliveMs});`;
  fs.writeFileSync(bundle, `${BUNDLE_WRAPPER}${code}\n});`);
  return bundle;
}

/** The files beside the bundle: its caches, and anything half-written. */
const besideBundle = () => fs.readdirSync(dir).filter((file) => file !== 'gateway-test.cjs');
const cacheFiles = () => besideBundle().filter((file) => file.endsWith('.v8-cache'));

/** Runs `bundle` as dist/main.js does, in a fresh process (with `flags`); its lines, the last one runBundle's answer. */
async function runInProcess(bundle: string, cacheAfterMs: number, flags: string[] = []) {
  const script = `
    const { runBundle } = await import(${JSON.stringify(RUN_BUNDLE)});
    const outcome = runBundle(${JSON.stringify(bundle)}, { cacheAfterMs: ${cacheAfterMs} });
    process.stdout.write(JSON.stringify(outcome) + '\\n');`;
  const { stdout } = await run(process.execPath, [...flags, '--input-type=module', '-e', script], {
    timeout: 20_000,
  });
  return stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** Replaces the one cache beside the bundle with `bytes`, as a file of the layout runBundle writes: checksum, then data. */
function replaceCache(data: Buffer, { checksumOf = data }: { checksumOf?: Buffer } = {}) {
  const [cache] = cacheFiles();
  if (!cache) throw new Error('no cache to replace');
  const sum = crypto.createHash('sha256').update(checksumOf).digest();
  fs.writeFileSync(path.join(dir, cache), Buffer.concat([sum, data]));
  return path.join(dir, cache);
}

/** The start after the cache was spoilt runs uncached; the one after it uses the cache written anew. */
async function expectWrittenAnew(bundle: string) {
  const [seen, outcome] = await runInProcess(bundle, 100);
  expect(seen).toMatchObject({ answer: 42 });
  expect(outcome).toEqual({ cacheUsed: false });
  const [, next] = await runInProcess(bundle, 100);
  expect(next).toEqual({ cacheUsed: true });
}

describe('runBundle: the gateway bundle run with its code cache (scripts/runBundle.mjs)', () => {
  it('runs the bundle as a required CommonJS file', async () => {
    const bundle = writeBundle({ aliveMs: 0 });
    const [seen] = await runInProcess(bundle, 60_000);
    expect(seen).toEqual({
      filename: bundle,
      dirname: path.dirname(bundle),
      answer: 42,
      requires: 'function',
      hostname: 'string',
    });
  });

  it('a serving process writes the cache; the next start uses it and writes none', async () => {
    const bundle = writeBundle({ aliveMs: 600 });
    const [, first, importedFirst] = await runInProcess(bundle, 100);
    expect(first).toEqual({ cacheUsed: false });
    expect(importedFirst).toEqual({ imported: 'function' });
    const [cache] = cacheFiles();
    expect(cache).toMatch(/^gateway-test\.cjs\.[0-9a-f]{8}\.v8-cache$/);
    const written = fs.statSync(path.join(dir, cache ?? '')).mtimeMs;

    const [, second, imported] = await runInProcess(bundle, 100);
    expect(second).toEqual({ cacheUsed: true });
    expect(imported).toEqual({ imported: 'function' });
    expect(fs.statSync(path.join(dir, cache ?? '')).mtimeMs).toBe(written);
    // nothing half-written is left beside it
    expect(besideBundle()).toEqual([cache]);
  });

  it('a process that never says it serves (a cluster primary) leaves the cache to one that does', async () => {
    const bundle = writeBundle({ aliveMs: 600, serves: false });
    await runInProcess(bundle, 100);
    expect(besideBundle()).toEqual([]);
  });

  it('a process that ends before the cache is due leaves none', async () => {
    const bundle = writeBundle({ aliveMs: 0 });
    await runInProcess(bundle, 2_000);
    expect(besideBundle()).toEqual([]);
  });

  it('a start under other V8 flags keeps a cache of its own, and leaves the other as it was', async () => {
    const bundle = writeBundle({ aliveMs: 600 });
    await runInProcess(bundle, 100);
    const [plain] = cacheFiles();
    const plainBytes = fs.readFileSync(path.join(dir, plain ?? ''));
    const [, other] = await runInProcess(bundle, 100, ['--stack-trace-limit=20']);
    expect(other).toEqual({ cacheUsed: false });
    expect(cacheFiles()).toHaveLength(2);
    expect(fs.readFileSync(path.join(dir, plain ?? '')).equals(plainBytes)).toBe(true);
    const [, again] = await runInProcess(bundle, 100, ['--stack-trace-limit=20']);
    expect(again).toEqual({ cacheUsed: true });
  });

  it('a damaged cache (its checksum does not match) is never handed to V8, and is written anew', async () => {
    const bundle = writeBundle({ aliveMs: 600 });
    await runInProcess(bundle, 100);
    const [cache] = cacheFiles();
    const bytes = fs.readFileSync(path.join(dir, cache ?? ''));
    // one byte of V8's data flipped: V8 itself would take it (it checks no checksum in a release build)
    const last = bytes.length - 1;
    bytes[last] = (bytes[last] ?? 0) ^ 0xff;
    fs.writeFileSync(path.join(dir, cache ?? ''), bytes);
    await expectWrittenAnew(bundle);
  });

  it('a cache V8 refuses is ignored and written anew', async () => {
    const bundle = writeBundle({ aliveMs: 600 });
    await runInProcess(bundle, 100);
    replaceCache(Buffer.alloc(4096, 7));
    await expectWrittenAnew(bundle);
  });

  it('a cache it cannot put in place leaves the start uncached, not failed, and nothing half-written', async () => {
    const bundle = writeBundle({ aliveMs: 600 });
    await runInProcess(bundle, 100);
    const [cache] = cacheFiles();
    // a directory where the cache goes: the rename fails, as a full disk or a lost permission would
    fs.rmSync(path.join(dir, cache ?? ''));
    fs.mkdirSync(path.join(dir, cache ?? ''));
    fs.writeFileSync(path.join(dir, cache ?? '', 'keep'), '');
    const [seen, outcome] = await runInProcess(bundle, 100);
    expect(seen).toMatchObject({ answer: 42 });
    expect(outcome).toEqual({ cacheUsed: false });
    expect(besideBundle()).toEqual([cache]);
  });
});

describe('the build (scripts/build.mjs, run before the suite)', () => {
  it('names the bundle by its content, so a cache is only ever read for the bundle it was made from', () => {
    const main = fs.readFileSync(path.join(ROOT, 'dist/main.js'), 'utf8');
    const named = /\.\/chunks\/(gateway-([0-9a-f]{16})\.cjs)'/.exec(main);
    expect(named).not.toBeNull();
    const [, bundle = '', hash] = named ?? [];
    const written = fs.readFileSync(path.join(ROOT, 'dist/chunks', bundle), 'utf8');
    const link = `//# sourceMappingURL=${bundle}.map\n`;
    expect(written.endsWith(link)).toBe(true);
    const code = written.slice(0, -link.length);
    // already wrapped as the function runBundle calls, strict as our ES modules were
    expect(code.startsWith(`${BUNDLE_WRAPPER}'use strict';`)).toBe(true);
    expect(crypto.createHash('sha256').update(code).digest('hex').slice(0, 16)).toBe(hash);
    expect(fs.existsSync(path.join(ROOT, 'dist/chunks', `${bundle}.map`))).toBe(true);
  });

  it('writes the bundle in ASCII alone, so V8 holds its source one byte a character', () => {
    const main = fs.readFileSync(path.join(ROOT, 'dist/main.js'), 'utf8');
    const [, bundle = ''] = /\.\/chunks\/(gateway-[0-9a-f]{16}\.cjs)'/.exec(main) ?? [];
    const written = fs.readFileSync(path.join(ROOT, 'dist/chunks', bundle), 'utf8');
    expect(/[\u0080-\uffff]/.exec(written)?.index).toBeUndefined();
  });

  it('replaces what a comment holds beyond ASCII, one code unit for one (the source map counts them)', async () => {
    const code = 'const a = "\\u00e9"; // caf\u00e9 \u2014 \u{1F600}\n/* \u00b5s */ const b = 1;\n';
    const ascii = await asciiOnly(esbuild, code);
    expect(ascii).toBe('const a = "\\u00e9"; // caf? ? ??\n/* ?s */ const b = 1;\n');
    expect(ascii.length).toBe(code.length);
  });

  it.each([
    ['a string', 'const s = "caf\u00e9";\n'],
    ['a regular expression (esbuild leaves its characters as they are)', 'const r = /[\u201c\u201d]/g;\n'],
    ["a tagged template's raw text", 'const raw = String.raw`caf\u00e9`;\n'],
  ])('fails the build for a character beyond ASCII in %s, never rewrites it', async (_where, code) => {
    await expect(asciiOnly(esbuild, code)).rejects.toThrow(/beyond ASCII outside its comments/);
  });
});
