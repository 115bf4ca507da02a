import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * A CommonJS package loaded the first time it is used rather than when the process starts: pg,
 * prom-client and nodemailer took ~25, ~35 and ~80 ms of every serving process's start-up, and the
 * embedded default (SQLite, metrics off, mail written by the one process that delivers it) never
 * or only later needs them (docs/performance.md).
 */
export function onFirstUse<T>(name: string): () => T {
  let loaded: T | undefined;
  return () => {
    loaded ??= require(name) as T;
    return loaded;
  };
}
