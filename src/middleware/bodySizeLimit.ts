import type { IncomingMessage } from 'node:http';
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { AppEnv } from '../http/types.js';

/**
 * A request body limit that, for the usual request, builds no WHATWG Request: a body of declared
 * length is judged by its Content-Length (Node's parser never reads past it), and an HTTP/1.1
 * request with neither Content-Length nor Transfer-Encoding has no body. Only a chunked body goes
 * through Hono's bodyLimit, which counts it through a web stream. That stream, its Request and
 * AbortController were about a sixth of a login's main-thread time (docs/performance.md); without
 * them the route reads the body straight from the socket (@hono/node-server's direct read).
 */
export function bodySizeLimit(maxSize: number, tooLarge: () => never): MiddlewareHandler<AppEnv> {
  const counted = bodyLimit({ maxSize, onError: tooLarge });
  return async (c, next) => {
    if (c.req.header('transfer-encoding') !== undefined) return counted(c, next);
    const declared = c.req.header('content-length');
    if (declared !== undefined) {
      if (Number.parseInt(declared, 10) > maxSize) tooLarge();
      return next();
    }
    // outside Node's HTTP server (app.request in tests) a body may come without either header
    return servedByNode(c) ? next() : counted(c, next);
  };
}

function servedByNode(c: Context<AppEnv>): boolean {
  return (c.env as { incoming?: IncomingMessage } | undefined)?.incoming !== undefined;
}
