import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** A package loaded with its first use; `ifLoaded` gives it only if this process has loaded it already (by any path). */
export interface OnFirstUse<T> {
  (): T;
  ifLoaded(): T | undefined;
}

/**
 * A CommonJS package loaded the first time it is used rather than when the process starts: pg,
 * prom-client and nodemailer took ~25, ~35 and ~80 ms of every serving process's start-up, and the
 * embedded default (SQLite, metrics off, mail written by the one process that delivers it) never
 * or only later needs them (docs/performance.md). The first use pays that time on the event loop.
 * Load such a package only through its handle: nodemailer ships an ES module build beside this
 * CommonJS one, and an `import` of it elsewhere would load a second copy with classes of its own.
 */
export function onFirstUse<T>(name: string): OnFirstUse<T> {
  let loaded: T | undefined;
  const load = () => {
    loaded ??= require(name) as T;
    return loaded;
  };
  const ifLoaded = () => loaded ?? (require.cache[require.resolve(name)]?.exports as T | undefined);
  return Object.assign(load, { ifLoaded });
}
