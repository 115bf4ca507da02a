// Runs the gateway's bundle (dist/chunks/gateway-<hash>.cjs, scripts/build.mjs) from dist/main.js,
// with V8's code cache: compiling the 3 MB bundle and the functions a start runs took each process
// ~140 ms of CPU, three times over for `WORKERS=2` (docs/performance.md, 2026-12-07, 08:38–11:38).
// Node 20 has no code cache for ES modules (module.enableCompileCache is Node 22), so the bundle is
// CommonJS compiled through vm.Script. Plain JS: it runs before any loader. A serving process that
// started without a usable cache writes one next to the bundle; a cache V8 refuses is compiled
// without and written anew. Whoever can write it can write the bundle beside it: dist/ is code.
import crypto from 'node:crypto';
import fs from 'node:fs';
import Module from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

/** How long after a process says it serves its cache is made: its start's functions are compiled by then. */
export const CACHE_AFTER_MS = 5_000;

/** What src/main.ts emits on `process` once the process serves (a cluster's primary never does). */
export const SERVING_EVENT = 'fhir-facade:serving';

/** The cache's own checksum: V8 checks a cache's version, flags and source length, not its bytes. */
const CHECKSUM_BYTES = 32;
const checksum = (bytes) => crypto.createHash('sha256').update(bytes).digest();

/**
 * The flags a cache is made under (V8 refuses one made under others, such as a heap size): a start
 * with other flags keeps a cache of its own instead of refusing and replacing another's.
 */
const flagsTag = () =>
  checksum(JSON.stringify([process.execArgv, process.env.NODE_OPTIONS ?? '']))
    .toString('hex')
    .slice(0, 8);

/** The code cache of `bundle` under this process's flags; the bundle's name carries its content's hash. */
export const cacheFileOf = (bundle) => `${bundle}.${flagsTag()}.v8-cache`;

/** The cache, or undefined when it is absent, unreadable or not what was written (a torn or damaged file). */
function readCache(file) {
  let bytes;
  try {
    bytes = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  const data = bytes.subarray(CHECKSUM_BYTES);
  return bytes.length > CHECKSUM_BYTES && checksum(data).equals(bytes.subarray(0, CHECKSUM_BYTES))
    ? data
    : undefined;
}

/** Written under a name of its own and renamed into place: a start reading it sees the old cache or the new, never half. */
function writeCache(script, file) {
  const partial = `${file}.${process.pid}-${crypto.randomBytes(4).toString('hex')}.partial`;
  try {
    // a dist/ this process may not write (a read-only image) is not worth the cache's making
    fs.accessSync(path.dirname(file), fs.constants.W_OK);
    const data = script.createCachedData();
    fs.writeFileSync(partial, Buffer.concat([checksum(data), data]), { flag: 'wx' });
    fs.renameSync(partial, file);
  } catch {
    fs.rmSync(partial, { force: true });
  }
}

/** The bundle's import(): its packages resolve from dist/, as the bundle's own require does. */
const importEsm = (specifier) => import(specifier);

/**
 * Runs the CommonJS bundle `bundle` (an absolute path; its code inside the function Node wraps a
 * CommonJS file in, with `__importEsm` after Node's five parameters) as Node would require it,
 * with its code cache when V8 takes it (`cacheUsed`). Else the cache is made `cacheAfterMs` after
 * the process says it serves (SERVING_EVENT).
 */
export function runBundle(bundle, { cacheAfterMs = CACHE_AFTER_MS } = {}) {
  const cacheFile = cacheFileOf(bundle);
  const cachedData = readCache(cacheFile);
  // the file is the function Node wraps a CommonJS file in (scripts/build.mjs writes it so). No
  // import() runs in it: Node 20 drops a cached script's import() callback, so the bundle is
  // handed this module's import() instead (src/importEsm.ts)
  // read as latin1: the build leaves no character beyond ASCII in it (scripts/build.mjs asciiOnly),
  // so the string is the same, and Node copies the bytes instead of decoding UTF-8 (26 against 35 ms)
  const script = new vm.Script(fs.readFileSync(bundle, 'latin1'), { filename: bundle, cachedData });
  const cacheUsed = cachedData !== undefined && !script.cachedDataRejected;
  if (!cacheUsed) {
    process.once(SERVING_EVENT, () => {
      // unref'd: a process that ends sooner leaves no cache, nor waits to write one
      setTimeout(() => writeCache(script, cacheFile), cacheAfterMs).unref();
    });
  }
  const module = { exports: {}, filename: bundle, id: bundle, loaded: false };
  script
    .runInThisContext()
    .call(
      module.exports,
      module.exports,
      Module.createRequire(bundle),
      module,
      bundle,
      path.dirname(bundle),
      importEsm,
    );
  module.loaded = true;
  return { cacheUsed };
}
