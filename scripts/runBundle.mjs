// Runs the gateway's bundle (dist/chunks/gateway-<hash>.cjs, scripts/build.mjs) from dist/main.js,
// with V8's code cache: compiling the 3 MB bundle and the functions a start runs took each process
// ~140 ms of CPU, three times over for `WORKERS=2` (docs/performance.md, 2026-12-07 08:38). Node 20
// has no code cache for ES modules (module.enableCompileCache is Node 22), so the bundle is CommonJS
// compiled through vm.Script. Plain JS: it runs before any loader. The cache is written next to the
// bundle once a serving process has started without a usable one; a cache V8 refuses (another Node,
// other flags) is compiled without and written anew. Whoever can write it can write the bundle
// beside it: dist/ is code. A dist/ this process cannot write (a read-only image) just goes uncached.
import cluster from 'node:cluster';
import fs from 'node:fs';
import Module from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

/** How long after the bundle starts its cache is made: the start's functions are compiled by then. */
export const CACHE_AFTER_MS = 5_000;

/** The code cache of `bundle`: named after it, and the bundle's name carries its content's hash. */
export const cacheFileOf = (bundle) => `${bundle}.v8-cache`;

function readCache(file) {
  try {
    return fs.readFileSync(file);
  } catch {
    return undefined;
  }
}

/** Written beside and renamed into place: a start reading it meanwhile sees the old cache or the new, never half. */
function writeCache(script, file) {
  const partial = `${file}.${process.pid}.partial`;
  try {
    fs.writeFileSync(partial, script.createCachedData());
    fs.renameSync(partial, file);
  } catch {
    fs.rmSync(partial, { force: true });
  }
}

/**
 * A process that serves requests, whose compiled functions are the ones worth caching: a cluster's
 * primary with workers serves none (src/cluster.ts), so its smaller cache must not win.
 */
const serves = () => cluster.isWorker || Object.keys(cluster.workers ?? {}).length === 0;

/**
 * Runs the CommonJS bundle `bundle` (an absolute path; its code inside the function Node wraps a
 * CommonJS file in) as Node would require it, with its code
 * cache when V8 takes it (`cacheUsed`); else the cache is made `cacheAfterMs` later, should this
 * process still run and serve.
 */
export function runBundle(bundle, { cacheAfterMs = CACHE_AFTER_MS } = {}) {
  const cacheFile = cacheFileOf(bundle);
  const cachedData = readCache(cacheFile);
  // the file is the function Node wraps a CommonJS file in (scripts/build.mjs writes it so)
  const script = new vm.Script(fs.readFileSync(bundle, 'utf8'), {
    filename: bundle,
    cachedData,
    // a package's own `import()` loads as it would in a required file
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const cacheUsed = cachedData !== undefined && !script.cachedDataRejected;
  if (!cacheUsed) {
    // unref'd: a process that ends sooner (a failed start) leaves no cache, nor waits to write one
    setTimeout(() => {
      if (serves()) writeCache(script, cacheFile);
    }, cacheAfterMs).unref();
  }
  const module = { exports: {}, filename: bundle, id: bundle, loaded: false };
  script
    .runInThisContext()
    .call(module.exports, module.exports, Module.createRequire(bundle), module, bundle, path.dirname(bundle));
  module.loaded = true;
  return { cacheUsed };
}
