/** How long after a process says it serves its cache is made. */
export const CACHE_AFTER_MS: number;
/** What src/main.ts emits on `process` once the process serves. */
export const SERVING_EVENT: string;
/** The code cache file of a bundle, under this process's flags. */
export function cacheFileOf(bundle: string): string;
/** Runs a CommonJS bundle with its code cache; `cacheUsed` when V8 took the cache. */
export function runBundle(bundle: string, options?: { cacheAfterMs?: number }): { cacheUsed: boolean };
