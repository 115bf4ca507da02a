import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { createRoute, z } from '@hono/zod-openapi';
import type { Context, MiddlewareHandler } from 'hono';
import { escapeHtml } from '../email/templates.js';
import { createRouter } from '../http/router.js';
import type { AppEnv } from '../http/types.js';
import { projectFile } from '../paths.js';

/**
 * GET /docs: Swagger UI rendered from /openapi.json, working offline. Its scripts and styles
 * are served from node_modules (swagger-ui-dist) and this folder, never from a CDN, and the
 * page's Content-Security-Policy allows nothing but this origin.
 */

/** Only 'self': no inline script or style, no CDN; `data:` images are the SVG icons inside swagger-ui.css. */
export const DOCS_CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Static files change only with a deploy: cache an hour, revalidate with the ETag. */
const ASSET_CACHE_CONTROL = 'public, max-age=3600';

interface AssetSource {
  readonly file: string;
  readonly contentType: string;
}

function swaggerUiDistDir(): string {
  const require = createRequire(import.meta.url);
  return path.dirname(require.resolve('swagger-ui-dist/package.json'));
}

/** The allow-list of files /docs/assets serves: nothing else from node_modules is reachable. */
function assetSources(): Record<string, AssetSource> {
  const dist = swaggerUiDistDir();
  return {
    'swagger-ui-bundle.js': {
      file: path.join(dist, 'swagger-ui-bundle.js'),
      contentType: 'text/javascript; charset=utf-8',
    },
    'swagger-ui.css': { file: path.join(dist, 'swagger-ui.css'), contentType: 'text/css; charset=utf-8' },
    'favicon-32x32.png': { file: path.join(dist, 'favicon-32x32.png'), contentType: 'image/png' },
    'swagger-init.js': {
      file: projectFile('src/docs/swaggerInit.js'),
      contentType: 'text/javascript; charset=utf-8',
    },
  };
}

interface LoadedAsset {
  readonly body: Uint8Array<ArrayBuffer>;
  readonly contentType: string;
  readonly etag: string;
}

function loadAsset(source: AssetSource): LoadedAsset {
  // swagger-ui.css ends with a sourceMappingURL comment; maps are not served, so drop it (no 404 in devtools)
  let body: Buffer = fs.readFileSync(source.file);
  if (source.contentType.startsWith('text/')) {
    body = Buffer.from(body.toString('utf8').replace(/\n\/[/*]# sourceMappingURL=[^\n]*\s*$/, '\n'));
  }
  const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
  return { body: new Uint8Array(body), contentType: source.contentType, etag };
}

function page(title: string): string {
  const t = escapeHtml(title);
  // relative URLs: /docs resolves them against /, so a proxy path prefix keeps working
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${t} API</title>`,
    '<link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">',
    '<link rel="stylesheet" href="docs/assets/swagger-ui.css">',
    '</head>',
    '<body>',
    `<noscript><p>This page needs JavaScript. The API description is <a href="openapi.json">openapi.json</a>; the frontend guide is docs/auth_integration.md in the gateway's source repository.</p></noscript>`,
    '<div id="swagger-ui"></div>',
    '<script src="docs/assets/swagger-ui-bundle.js"></script>',
    '<script src="docs/assets/swagger-init.js"></script>',
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

const docsPageRoute = createRoute({
  method: 'get',
  path: '/docs',
  operationId: 'getDocsPage',
  tags: ['docs'],
  summary: 'This interactive documentation (Swagger UI), rendered from /openapi.json; works offline',
  responses: {
    200: { description: 'An HTML page', content: { 'text/html': { schema: z.string() } } },
  },
});

function sendAsset(c: Context<AppEnv>, asset: LoadedAsset): Response {
  const headers = {
    'Content-Type': asset.contentType,
    'Cache-Control': ASSET_CACHE_CONTROL,
    ETag: asset.etag,
  };
  if (c.req.header('if-none-match') === asset.etag) return c.body(null, 304, headers);
  return c.body(asset.body, 200, headers);
}

/**
 * `/docs/` redirects to `/docs`: served under the slash, the page's relative asset URLs would
 * resolve below `/docs/docs/`. The Location is relative (`../docs`) so a proxy path prefix is
 * kept. Mounted as middleware, not as an operation of /openapi.json: it is a spelling, not an API.
 */
export function docsTrailingSlash(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (c.req.path !== '/docs/' || (c.req.method !== 'GET' && c.req.method !== 'HEAD')) return next();
    return c.redirect('../docs', 301);
  };
}

/** GET /docs and its assets. /openapi.json itself is served by createApp (app.doc31). */
export function docsRoutes() {
  const router = createRouter();
  const sources = assetSources();
  const loaded = new Map<string, LoadedAsset>();

  router.openapi(docsPageRoute, (c) => {
    c.header('Content-Security-Policy', DOCS_CONTENT_SECURITY_POLICY);
    return c.html(page(c.var.deps.config.appName), 200);
  });

  for (const [name, source] of Object.entries(sources)) {
    router.get(`/docs/assets/${name}`, (c) => {
      let asset = loaded.get(name);
      if (!asset) {
        asset = loadAsset(source);
        loaded.set(name, asset);
      }
      return sendAsset(c, asset);
    });
  }

  // /openapi.json is served by app.doc31 in createApp; listed here so the document describes itself
  router.openAPIRegistry.registerPath({
    method: 'get',
    path: '/openapi.json',
    operationId: 'getOpenApiDocument',
    tags: ['docs'],
    summary: 'This OpenAPI 3.1 document, generated from the schemas that validate requests',
    responses: {
      200: {
        description: 'The OpenAPI document',
        content: { 'application/json': { schema: z.record(z.string(), z.unknown()) } },
      },
    },
  });
  return router;
}
