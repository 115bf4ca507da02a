/**
 * The rate limits count in fixed windows aligned to the epoch (src/auth/rateLimiter.ts). Attempts a
 * test means to count in one window must not straddle a window's end: a CI run once started six
 * logins 0.7 s before one, and the sixth was the first of the next window. Waits out the last
 * `marginMs` of the current window of that size.
 */
export async function clearOfWindowEnd(windowSeconds: number, marginMs = 5_000): Promise<void> {
  const windowMs = windowSeconds * 1000;
  const left = windowMs - (Date.now() % windowMs);
  if (left < marginMs) await new Promise((resolve) => setTimeout(resolve, left + 50));
}
