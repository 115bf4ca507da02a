import fs from 'node:fs';
import path from 'node:path';

/**
 * The project root (the directory of package.json), found from this module's own location: the
 * same whether the code runs from src/ under a TypeScript loader or from the dist/ bundle that
 * `npm start` serves. Files the gateway reads at run time (fhir-profiles/, the password worker,
 * the docs page's init script) are located from here.
 */
function findRoot(from: string): string {
  let dir = from;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${from}`);
    dir = parent;
  }
}

const PROJECT_ROOT = findRoot(import.meta.dirname);

/** A file of the project, by its path from the root (`src/auth/passwordWorker.mjs`). */
export function projectFile(relative: string): string {
  return path.join(PROJECT_ROOT, relative);
}
