/** How long after the bundle starts its cache is made. */
export const CACHE_AFTER_MS: number;
/** The code cache file of a bundle. */
export function cacheFileOf(bundle: string): string;
/** Runs a CommonJS bundle with its code cache; `cacheUsed` when V8 took the cache. */
export function runBundle(bundle: string, options?: { cacheAfterMs?: number }): { cacheUsed: boolean };
