import type { Context } from 'hono';
import type { AppEnv } from '../http/types.js';

/**
 * The headers of the answer, to set after the route ran. `c.res.headers` is written in place:
 * `c.header()` on an answered request, and anything touching `c.res` before the route runs, make
 * Hono copy the Response through a body stream, which cost a passthrough request about a fifth
 * of its CPU (docs/performance.md).
 */
export function answerHeaders(c: Context<AppEnv>): Headers {
  try {
    const headers = c.res.headers;
    // a Response from fetch() has immutable headers: setting nosniff (every answer carries it) is the
    // probe, and such an answer is copied once (the rare path)
    headers.set('X-Content-Type-Options', 'nosniff');
    return headers;
  } catch {
    c.res = new Response(c.res.body, c.res);
    return c.res.headers;
  }
}
