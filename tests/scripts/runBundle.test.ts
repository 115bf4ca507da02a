import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import Module from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { cacheFileOf } from '../../scripts/runBundle.mjs';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const RUN_BUNDLE = path.join(ROOT, 'scripts/runBundle.mjs');

let dir = '';
afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = '';
});

/** `code` as scripts/build.mjs writes the bundle: inside the function Node wraps a CommonJS file in. */
const writeWrapped = (file: string, code: string) => fs.writeFileSync(file, Module.wrap(code));

/** A CommonJS bundle that reports what a required file sees, and stays up `aliveMs` (its cache is made meanwhile). */
function writeBundle(aliveMs: number, more = ''): string {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-bundle-'));
  const bundle = path.join(dir, 'gateway-test.cjs');
  writeWrapped(
    bundle,
    `const os = require('node:os');
     const helper = (n) => n * 2;
     module.exports.answer = helper(21);
     process.stdout.write(JSON.stringify({
       filename: __filename, dirname: __dirname, answer: module.exports.answer,
       requires: typeof require('node:path').join, hostname: typeof os.hostname(),
     }) + '\\n');
     setTimeout(() => {}, ${aliveMs});
     ${more}`,
  );
  return bundle;
}

/** Runs `bundle` as dist/main.js does, in a fresh process; its output lines, the last one runBundle's answer. */
async function runInProcess(bundle: string, cacheAfterMs: number): Promise<Record<string, unknown>[]> {
  const script = `
    const { runBundle } = await import(${JSON.stringify(RUN_BUNDLE)});
    const outcome = runBundle(${JSON.stringify(bundle)}, { cacheAfterMs: ${cacheAfterMs} });
    process.stdout.write(JSON.stringify(outcome) + '\\n');`;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { timeout: 20_000 });
  return stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('runBundle: the gateway bundle run with its code cache (scripts/runBundle.mjs)', () => {
  it('runs the bundle as a required CommonJS file', async () => {
    const bundle = writeBundle(0);
    const [seen] = await runInProcess(bundle, 60_000);
    expect(seen).toEqual({
      filename: bundle,
      dirname: path.dirname(bundle),
      answer: 42,
      requires: 'function',
      hostname: 'string',
    });
  });

  it('writes the cache once a process has run a while, and the next start uses it and writes none', async () => {
    const bundle = writeBundle(600);
    const cache = cacheFileOf(bundle);
    const [, first] = await runInProcess(bundle, 100);
    expect(first).toEqual({ cacheUsed: false });
    expect(fs.statSync(cache).size).toBeGreaterThan(0);
    const written = fs.statSync(cache).mtimeMs;

    const [, second] = await runInProcess(bundle, 100);
    expect(second).toEqual({ cacheUsed: true });
    expect(fs.statSync(cache).mtimeMs).toBe(written);
    // nothing half-written is left beside it
    expect(fs.readdirSync(dir).sort()).toEqual(['gateway-test.cjs', 'gateway-test.cjs.v8-cache']);
  });

  it('a process that ends before the cache is due leaves none', async () => {
    const bundle = writeBundle(0);
    await runInProcess(bundle, 2_000);
    expect(fs.existsSync(cacheFileOf(bundle))).toBe(false);
  });

  it("a cluster's primary with workers leaves the cache to a process that serves", async () => {
    const worker = path.join(os.tmpdir(), `ff-bundle-worker-${process.pid}.cjs`);
    fs.writeFileSync(worker, 'setTimeout(() => {}, 5000);');
    const bundle = writeBundle(
      0,
      `const cluster = require('node:cluster');
       cluster.setupPrimary({ exec: ${JSON.stringify(worker)} });
       const forked = cluster.fork();
       setTimeout(() => forked.kill(), 600);`,
    );
    await runInProcess(bundle, 100);
    fs.rmSync(worker);
    expect(fs.existsSync(cacheFileOf(bundle))).toBe(false);
  });

  it('a cache V8 refuses is ignored and written anew', async () => {
    const bundle = writeBundle(600);
    const cache = cacheFileOf(bundle);
    fs.writeFileSync(cache, Buffer.alloc(4096, 7));
    const [seen, outcome] = await runInProcess(bundle, 100);
    expect(seen).toMatchObject({ answer: 42 });
    expect(outcome).toEqual({ cacheUsed: false });
    const [, next] = await runInProcess(bundle, 100);
    expect(next).toEqual({ cacheUsed: true });
  });

  it('a dist/ it cannot write leaves the start uncached, not failed', async () => {
    const bundle = writeBundle(600);
    // a directory where the cache file would go: the write fails as on a read-only image
    fs.mkdirSync(cacheFileOf(bundle));
    const [seen, outcome] = await runInProcess(bundle, 100);
    expect(seen).toMatchObject({ answer: 42 });
    expect(outcome).toEqual({ cacheUsed: false });
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
    // already wrapped as a CommonJS file's function: runBundle compiles it as it is
    expect(code.startsWith(Module.wrap('').split('\n')[0] ?? '')).toBe(true);
    expect(crypto.createHash('sha256').update(code).digest('hex').slice(0, 16)).toBe(hash);
    expect(fs.existsSync(path.join(ROOT, 'dist/chunks', `${bundle}.map`))).toBe(true);
  });
});
