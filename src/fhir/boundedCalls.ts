import { AppError } from '../errors.js';

/**
 * Several upstream calls one request needs: a few at a time, all within one deadline. One after
 * another, 20 panel lookups behind a slow server took 20 timeouts' worth (50 s for a page), and a
 * practitioner's write naming 50 records waited for 50 reads in a row (minutes).
 */

/** Tells eachAtMost to start no more calls (the answer is decided: a deadline passed). */
export interface Stop {
  stopped: boolean;
}

/**
 * Calls `call` for every item, at most `limit` at once; rejects with the first failure, after
 * which no call starts (those begun run on), nor after `stop.stopped` is set.
 */
export async function eachAtMost<T>(
  items: readonly T[],
  limit: number,
  call: (item: T) => Promise<unknown>,
  stop: Stop = { stopped: false },
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length && !stop.stopped) {
      try {
        await call(items[next++] as T);
      } catch (error) {
        stop.stopped = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * `work`, or a 504 once `ms` passed (`what` says which calls ran out of time, for the log); `stop`,
 * when given, is set then, so eachAtMost starts nothing more for an answer already given.
 */
export async function withinMs<T>(work: Promise<T>, ms: number, what: string, stop?: Stop): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      if (stop) stop.stopped = true;
      reject(new AppError('upstream_timeout', { cause: new Error(what) }));
    }, ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
    // a call failing after the deadline answered is no unhandled rejection
    work.catch(() => undefined);
  }
}
