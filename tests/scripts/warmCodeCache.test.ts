import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');

/** Runs the script as the Dockerfile does (plain `node`, no flags); the cache path it prints. */
async function warm(): Promise<{ cache: string; ms: number }> {
  const started = Date.now();
  const { stdout } = await run(process.execPath, ['scripts/warmCodeCache.mjs'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '' },
    timeout: 90_000,
  });
  return { cache: stdout.trim(), ms: Date.now() - started };
}

describe('scripts/warmCodeCache.mjs: the code cache made at build time, for a dist/ no start may write', () => {
  it('starts the built gateway until it has written the cache, then finds it without a start', async () => {
    const main = fs.readFileSync(path.join(ROOT, 'dist/main.js'), 'utf8');
    const bundle = /\.\/chunks\/(gateway-[0-9a-f]{16}\.cjs)'/.exec(main)?.[1] ?? '';
    const first = await warm();
    expect(path.dirname(first.cache)).toBe(path.join(ROOT, 'dist/chunks'));
    expect(path.basename(first.cache)).toMatch(
      new RegExp(`^${bundle.replaceAll('.', '\\.')}\\.[0-9a-f]{8}\\.v8-cache$`),
    );
    expect(fs.statSync(first.cache).size).toBeGreaterThan(100_000);

    // without it, a gateway is started until it writes it; with it, nothing is started
    fs.rmSync(first.cache);
    const made = await warm();
    expect(made.cache).toBe(first.cache);
    expect(fs.existsSync(made.cache)).toBe(true);
    const found = await warm();
    expect(found.cache).toBe(first.cache);
    expect(found.ms).toBeLessThan(made.ms);
  }, 200_000);
});
