import type { IncomingMessage } from 'node:http';
import type { Context } from 'hono';
import { Hono } from 'hono';
import type { AppEnv } from '../http/types.js';
import { authenticate } from '../middleware/authenticate.js';
import { capabilityStatement } from './capability.js';
import { passthrough } from './passthroughService.js';
import { resolveScope } from './scope.js';

/** The raw request target as the client sent it: dot segments and encodings are judged before any normalisation. */
function rawPathAndQuery(c: Context<AppEnv>): { path: string; query: URLSearchParams } {
  const raw =
    (c.env as { incoming?: IncomingMessage } | undefined)?.incoming?.url ??
    new URL(c.req.url).pathname + new URL(c.req.url).search;
  const index = raw.indexOf('?');
  return index < 0
    ? { path: raw, query: new URLSearchParams() }
    : { path: raw.slice(0, index), query: new URLSearchParams(raw.slice(index + 1)) };
}

function fhirJson(body: string | undefined, status: number, headers: Record<string, string>): Response {
  return new Response(body ?? null, {
    status,
    headers: { 'Content-Type': 'application/fhir+json; charset=utf-8', ...headers },
  });
}

/** /fhir/metadata (public) and the filtered passthrough /fhir/* (any signed-in role; the scope decides). */
export function passthroughRoutes() {
  const router = new Hono<AppEnv>();
  router.get('/fhir/metadata', async (c) =>
    fhirJson(JSON.stringify(await capabilityStatement(c.var.deps)), 200, {}),
  );
  const handle = async (c: Context<AppEnv>) => {
    const deps = c.var.deps;
    const { path, query } = rawPathAndQuery(c);
    const hasBody = c.req.method !== 'GET' && c.req.method !== 'HEAD';
    const scope = await resolveScope(deps, c.var.caller);
    const result = await passthrough(
      deps,
      c.var.caller,
      scope,
      { requestId: c.var.requestId, clientIp: c.var.clientIp },
      {
        method: c.req.method,
        rawPath: path,
        query,
        body: hasBody ? await c.req.text() : undefined,
        contentType: c.req.header('content-type'),
        headers: {
          'if-match': c.req.header('if-match'),
          'if-none-match': c.req.header('if-none-match'),
          'if-modified-since': c.req.header('if-modified-since'),
          'if-none-exist': c.req.header('if-none-exist'),
          prefer: c.req.header('prefer'),
        },
      },
    );
    return fhirJson(result.body, result.status, result.headers);
  };
  router.all('/fhir', authenticate(), handle);
  router.all('/fhir/*', authenticate(), handle);
  return router;
}
