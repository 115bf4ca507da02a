import type { ServerResponse } from 'node:http';
import type { HttpBindings } from '@hono/node-server';
import type { Context } from 'hono';
import type { AppEnv } from '../http/types.js';
import { isProtocolPath } from '../oauth/urls.js';

/**
 * The Node response of a request served by @hono/node-server, for the middlewares to set their
 * headers on before the route runs; undefined where they must set them after it (answerHeaders).
 * Node merges headers set this way into the head the route's Response writes, and the route's
 * own value wins for the same name. A route's Response then goes out by @hono/node-server's fast
 * path, its headers a plain object: reading `c.res.headers` after the route built a WHATWG Headers
 * for every answer, which the server then copied back into a plain object (a few per cent of a
 * read's CPU at most, docs/performance.md).
 */
export function unwrittenNodeResponse(c: Context<AppEnv>): ServerResponse | undefined {
  const outgoing = (c.env as Partial<HttpBindings> | undefined)?.outgoing;
  // app.request() (unit tests) has no Node response; oidc-provider writes its own (src/oauth/oauthRoutes.ts)
  if (!outgoing || outgoing.headersSent || isProtocolPath(c.req.path)) return undefined;
  return outgoing as ServerResponse;
}

/**
 * The headers of the answer, to set after the route ran (where unwrittenNodeResponse gives
 * nothing). `c.res.headers` is written in place: `c.header()` on an answered request, and
 * anything touching `c.res` before the route runs, make Hono copy the Response through a body
 * stream, which cost a passthrough request about a fifth of its CPU (docs/performance.md).
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
