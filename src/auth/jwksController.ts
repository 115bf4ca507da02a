import { createRoute, z } from '@hono/zod-openapi';
import { createRouter } from '../http/router.js';

const Jwks = z
  .object({ keys: z.array(z.record(z.string(), z.unknown())) })
  .openapi('JWKS', { description: 'RFC 7517 JSON Web Key Set' });

const jwksRoute = createRoute({
  method: 'get',
  path: '/.well-known/jwks.json',
  tags: ['auth'],
  summary: 'Public keys that verify our access tokens',
  responses: { 200: { description: 'The key set', content: { 'application/json': { schema: Jwks } } } },
});

export function jwksRoutes() {
  const router = createRouter();
  router.openapi(jwksRoute, (c) => {
    // public keys: safe to cache briefly, so verifiers do not fetch on every token
    c.header('Cache-Control', 'public, max-age=300');
    return c.json({ keys: [c.var.deps.signingKey.publicJwk] }, 200);
  });
  return router;
}
