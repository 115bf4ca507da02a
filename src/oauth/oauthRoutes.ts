import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { Context } from 'hono';
import { jwksResponse } from '../auth/jwksController.js';
import { AppError } from '../errors.js';
import { requestContext } from '../http/requestContext.js';
import { createRouter } from '../http/router.js';
import type { AppEnv } from '../http/types.js';
import { refusedBeforeProvider } from './endpointAudit.js';
import { attachRequestContext } from './gatewayRequest.js';
import { showInteraction, submitConsent, submitLogin } from './interactions.js';
import type { OAuthServer } from './provider.js';
import { withPublicRefreshClient } from './publicRefresh.js';
import { smartConfiguration } from './smartConfiguration.js';
import { INTERACTION_PREFIX, OAUTH_PREFIX, SESSION_COOKIE } from './urls.js';

/**
 * Mounts the SMART authorization server: `GET /fhir/.well-known/smart-configuration`, our login
 * and consent pages under /oauth/interaction/, and everything else under /oauth handed to
 * oidc-provider as the Node request and response (@hono/node-server's bindings), its mount
 * prefix stripped the way Express's `app.use('/oauth', ...)` would.
 */

type Ctx = Context<AppEnv>;
type NodeHandler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;
type LoadedServer = { server: OAuthServer; handle: NodeHandler };

const UID = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Every authorization request asks for a fresh login and the consent page: each launch is signed
 * in and agreed to on its own (its grant and gateway session are its own), and oidc-provider keeps
 * `offline_access` only when consent is prompted for (OpenID Connect Core section 11), which SMART
 * apps do not ask for. `prompt=none` is left alone: it then fails with `login_required`.
 */
function withSmartPrompts(search: string): string {
  const params = new URLSearchParams(search);
  const prompts = new Set((params.get('prompt') ?? '').split(' ').filter(Boolean));
  if (prompts.has('none')) return search;
  prompts.add('login');
  prompts.add('consent');
  params.set('prompt', [...prompts].join(' '));
  return `?${params}`;
}

/**
 * `prompt=none` can never succeed here (every launch asks for the password), so its answer could
 * say one thing only: whether this browser has a login session (`consent_required`) or not
 * (`login_required`), to any registered app. Handed over without that session, it is always
 * `login_required`.
 */
function withoutSessionForPromptNone(req: IncomingMessage, search: string): void {
  const prompts = (new URLSearchParams(search).get('prompt') ?? '').split(' ');
  const cookie = req.headers.cookie;
  if (!prompts.includes('none') || !cookie) return;
  req.headers.cookie = cookie
    .split(';')
    // the cookie and its signature (`.sig`; `.legacy.sig` from older oidc-provider versions)
    .filter((pair) => !(pair.split('=')[0]?.trim() ?? '').startsWith(SESSION_COOKIE))
    .join(';');
}

/** The headers every answer of ours carries, set on the Node response oidc-provider writes itself. */
function prepareNodeResponse(c: Ctx, res: ServerResponse): void {
  res.setHeader('X-Request-Id', c.var.requestId);
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('X-Frame-Options', 'DENY');
  // as on every answer of ours; oidc-provider sets its own where it caches on purpose
  res.setHeader('Cache-Control', 'no-store');
}

async function protocol(c: Ctx, { server, handle }: LoadedServer): Promise<Response> {
  const { incoming: received, outgoing } = c.env as Partial<HttpBindings>;
  // only a real Node server has the bindings (app.request() in a unit test has none)
  if (!received || !outgoing) throw new AppError('not_found');
  const url = new URL(received.url ?? '/', 'http://local');
  // decided on the path oidc-provider routes, which ignores case and a trailing slash, and handed
  // over in that one spelling: an exact match let `/oauth/authorize/` and `/oauth/AUTHORIZE` skip
  // the password and reuse the last login (a code for whoever that was)
  const pathname = url.pathname.replace(/\/+$/, '').toLowerCase();
  // the prefix alone names no endpoint (oidc-provider's router threw on the empty path: a 500)
  if (pathname === OAUTH_PREFIX) throw new AppError('not_found');
  const authorizing = pathname === `${OAUTH_PREFIX}/authorize`;
  const search = authorizing ? withSmartPrompts(url.search) : url.search;
  if (authorizing) withoutSessionForPromptNone(received, search);
  (received as IncomingMessage & { originalUrl?: string }).originalUrl = `${pathname}${search}`;
  received.url = `${pathname.slice(OAUTH_PREFIX.length)}${search}`;
  const tokenEndpoint = pathname === `${OAUTH_PREFIX}/token`;
  let incoming = received;
  try {
    if (tokenEndpoint || pathname === `${OAUTH_PREFIX}/revoke`)
      incoming = await withPublicRefreshClient(server.provider, received);
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
    const action = tokenEndpoint ? 'smart.token' : 'smart.revoke';
    c.var.deps.auditTrail.record(refusedBeforeProvider(action, error.status, requestContext(c)));
    // the token endpoint answers in OAuth's shape (RFC 6749 section 5.2), also what it refuses before oidc-provider reads it
    return c.json({ error: 'invalid_request', error_description: error.detail }, error.status as 400 | 413, {
      'Cache-Control': 'no-store',
    });
  }
  prepareNodeResponse(c, outgoing);
  // RFC 6749 section 5.1: tokens are never cached (oidc-provider sets Cache-Control: no-store; HTTP/1.0 caches read Pragma)
  if (tokenEndpoint) outgoing.setHeader('Pragma', 'no-cache');
  attachRequestContext(incoming, requestContext(c));
  await handle(incoming, outgoing);
  // the answer is written: Hono only learns its status (for the request log)
  const written = new Response(null, { status: outgoing.statusCode, headers: RESPONSE_ALREADY_SENT.headers });
  // @hono/node-server honours "already sent" only on a Response it must read (its fast path for a plain one writes the head again)
  void written.body;
  return written;
}

function interaction(c: Ctx, server: OAuthServer): Promise<Response> {
  const [uid, action, ...rest] = c.req.path.slice(INTERACTION_PREFIX.length).split('/');
  if (!uid || !UID.test(uid) || rest.length > 0) throw new AppError('not_found');
  const route = `${c.req.method} ${action ?? ''}`;
  if (route === 'GET ') return showInteraction(c, server, uid);
  if (route === 'POST login') return submitLogin(c, server, uid);
  if (route === 'POST consent') return submitConsent(c, server, uid);
  throw new AppError(
    action === undefined || action === 'login' || action === 'consent' ? 'method_not_allowed' : 'not_found',
  );
}

/**
 * `loadServer` runs on the first /oauth request, once: oidc-provider and its dependencies (~30 MiB
 * and ~250 ms per process) load only on a gateway that serves SMART apps.
 */
export function oauthRoutes(loadServer: () => Promise<OAuthServer>) {
  const router = createRouter();
  let loading: Promise<LoadedServer> | undefined;
  const loaded = () => {
    loading ??= loadServer().then(
      (server) => ({ server, handle: server.provider.callback() as NodeHandler }),
      (error: unknown) => {
        // tried again by the next request rather than failing every one after it
        loading = undefined;
        throw error;
      },
    );
    return loading;
  };
  // public: an app discovers the authorization endpoints here before anyone signed in
  router.get('/fhir/.well-known/smart-configuration', (c) =>
    c.json(smartConfiguration(c.var.deps.config), 200, { 'Access-Control-Allow-Origin': '*' }),
  );
  router.all(`${OAUTH_PREFIX}/*`, async (c) => {
    // the whole key set, previous keys too: oidc-provider holds only the key it signs with
    const endpoint = c.req.path.replace(/\/+$/, '').toLowerCase();
    if (endpoint === `${OAUTH_PREFIX}/jwks` && c.req.method === 'GET') return jwksResponse(c);
    const server = await loaded();
    if (c.req.path.startsWith(INTERACTION_PREFIX)) return interaction(c, server.server);
    return protocol(c, server);
  });
  return router;
}
