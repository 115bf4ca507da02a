import { AppError } from '../errors.js';

/**
 * Several upstream calls one request needs: a few at a time, all within one deadline. One after
 * another, 20 panel lookups behind a slow server took 20 timeouts' worth (50 s for a page), and a
 * practitioner's write naming 50 records waited for 50 reads in a row (minutes).
 */

/** Calls `call` for every item, at most `limit` at once; rejects with the first failure (the calls begun run on). */
export async function eachAtMost<T>(
  items: readonly T[],
  limit: number,
  call: (item: T) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await call(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** `work`, or a 504 once `ms` passed (`what` says which calls ran out of time, for the log). */
export async function withinMs<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new AppError('upstream_timeout', { cause: new Error(what) })), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
    // a call failing after the deadline answered is no unhandled rejection
    work.catch(() => undefined);
  }
}
