import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { createRouter } from '../http/router.js';
import type { AppEnv } from '../http/types.js';

const Jwks = z
  .object({ keys: z.array(z.record(z.string(), z.unknown())) })
  .openapi('JWKS', { description: 'RFC 7517 JSON Web Key Set' });

const jwksRoute = createRoute({
  method: 'get',
  path: '/.well-known/jwks.json',
  operationId: 'getJwks',
  tags: ['auth'],
  summary: 'Public keys that verify our access tokens',
  description:
    'The signing key first, then the previous keys a rotation keeps verifying until their last token expired; a token names its key by `kid`.',
  responses: { 200: { description: 'The key set', content: { 'application/json': { schema: Jwks } } } },
});

/**
 * Every key that verifies our tokens, the signing key first (RFC 7517): here and at the SMART
 * issuer's /oauth/jwks, so a verifier meets a rotated key's tokens and the new key's alike.
 */
export function jwksResponse(c: Context<AppEnv>) {
  // public keys: safe to cache briefly, so verifiers do not fetch on every token, and to read
  // from any origin (a browser SMART app checks its id_token with them; no credentials involved)
  c.header('Cache-Control', 'public, max-age=300');
  c.header('Access-Control-Allow-Origin', '*');
  return c.json({ keys: [...c.var.deps.tokenKeys.jwks.keys] }, 200);
}

export function jwksRoutes() {
  const router = createRouter();
  router.openapi(jwksRoute, (c) => jwksResponse(c));
  return router;
}
