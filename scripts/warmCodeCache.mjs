// `node scripts/warmCodeCache.mjs` (the Dockerfile runs it after the build): starts the built
// gateway once, on a throwaway DATA_DIR and an ephemeral loopback port, until it has written the
// bundle's V8 code cache (scripts/runBundle.mjs), then stops it. For a dist/ the serving user
// cannot write, as in the image: its starts then read the cache made here. Run it with the flags
// the gateway runs with (none in the image): a cache is only read under the flags it was made
// under. Prints the cache's path. Plain JS: it runs before any loader.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cacheFileOf } from './runBundle.mjs';

const root = path.resolve(import.meta.dirname, '..');
/** The start, the five seconds runBundle waits after it, and room for a slow machine. */
const WAIT_MS = 60_000;

/** The bundle dist/main.js runs (scripts/build.mjs names it there). */
function builtBundle() {
  const main = fs.readFileSync(path.join(root, 'dist', 'main.js'), 'utf8');
  const name = /\.\/chunks\/(gateway-[0-9a-f]+\.cjs)'/.exec(main)?.[1];
  if (!name) throw new Error('dist/main.js names no bundle: run scripts/build.mjs first');
  return path.join(root, 'dist', 'chunks', name);
}

const running = (child) => child.exitCode === null && child.signalCode === null;

/** Resolves once `file` exists; rejects when `child` exits first or WAIT_MS pass. */
function written(file, child) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      if (fs.existsSync(file)) settle(resolve);
      else if (!running(child)) settle(reject, 'the gateway exited before it wrote the cache');
      else if (Date.now() - started > WAIT_MS) settle(reject, `no cache after ${WAIT_MS / 1000} s`);
    }, 200);
    const settle = (end, message) => {
      clearInterval(poll);
      end(message === undefined ? undefined : new Error(message));
    };
  });
}

async function warm() {
  const cache = cacheFileOf(builtBundle());
  if (fs.existsSync(cache)) return cache;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-warm-'));
  // this process's flags (none in the image), so the cache is made under the flags that read it
  const child = spawn(process.execPath, [...process.execArgv, path.join(root, 'dist', 'main.js')], {
    env: {
      PATH: process.env.PATH ?? '',
      ...(process.env.NODE_OPTIONS ? { NODE_OPTIONS: process.env.NODE_OPTIONS } : {}),
      DATA_DIR: dataDir,
      WORKERS: '1',
      HOST: '127.0.0.1',
      PORT: '0',
      PUBLIC_BASE_URL: 'http://127.0.0.1',
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    await written(cache, child);
    return cache;
  } finally {
    if (running(child)) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    // its keys, its database: nothing of this start stays in the image
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

process.stdout.write(`${await warm()}\n`);
