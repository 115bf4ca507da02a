import type { Context } from 'hono';
import { Hono } from 'hono';
import { AppError } from '../errors.js';
import { fhirJson } from '../http/fhirJson.js';
import { rawRequestTarget, requestContext } from '../http/requestContext.js';
import type { AppEnv } from '../http/types.js';
import { authenticate } from '../middleware/authenticate.js';
import { httpDateOrNone, jsonOnly } from './negotiation.js';
import { passthrough } from './passthroughService.js';
import { scopedFhir } from './scopedFhir.js';

/** The raw request target as the client sent it: dot segments and encodings are judged before any normalisation. */
function rawPathAndQuery(c: Context<AppEnv>): { path: string; rawQuery: string; query: URLSearchParams } {
  const raw = rawRequestTarget(c);
  const index = raw.indexOf('?');
  if (index < 0) return { path: raw, rawQuery: '', query: new URLSearchParams() };
  const rawQuery = raw.slice(index + 1);
  return { path: raw.slice(0, index), rawQuery, query: new URLSearchParams(rawQuery) };
}

/** The request body; one the client stopped sending (it closed the connection) is its failure, a 400, not ours. */
async function bodyText(c: Context<AppEnv>): Promise<string> {
  try {
    return await c.req.text();
  } catch (error) {
    if (error instanceof AppError) throw error; // e.g. the size limit's 413
    throw new AppError('invalid_json', { detail: 'The request body could not be read.', cause: error });
  }
}

/** /fhir/metadata (public) and the filtered passthrough /fhir/* (any signed-in role; the scope decides). */
export function passthroughRoutes() {
  const router = new Hono<AppEnv>();
  router.get('/fhir/metadata', async (c) => {
    // JSON only here too: a client that takes XML alone is told 406, not handed JSON it cannot read
    jsonOnly(rawPathAndQuery(c).query, c.req.header('accept'));
    return fhirJson(JSON.stringify(await c.get('deps').capabilities.get()), 200, {});
  });
  const handle = async (c: Context<AppEnv>) => {
    const deps = c.get('deps');
    const { path, rawQuery, query } = rawPathAndQuery(c);
    // HEAD is a GET whose body Hono leaves out: the same checks, audit and answer headers
    const method = c.req.method === 'HEAD' ? 'GET' : c.req.method;
    const hasBody = method !== 'GET';
    const fhir = scopedFhir(deps, c.get('caller'), requestContext(c));
    const result = await passthrough(deps, fhir, {
      method,
      rawPath: path,
      rawQuery,
      query,
      body: hasBody ? await bodyText(c) : undefined,
      contentType: c.req.header('content-type'),
      headers: {
        'if-match': c.req.header('if-match'),
        'if-none-match': c.req.header('if-none-match'),
        'if-modified-since': httpDateOrNone(c.req.header('if-modified-since')),
        'if-none-exist': c.req.header('if-none-exist'),
        prefer: c.req.header('prefer'),
        accept: c.req.header('accept'),
      },
    });
    return fhirJson(result.body, result.status, result.headers);
  };
  router.all('/fhir', authenticate(), handle);
  router.all('/fhir/*', authenticate(), handle);
  return router;
}
