import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { type EmbeddedFhirServer, startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';
import { tempDir } from './tempDir.js';

/**
 * A FHIR server with HAPI FHIR's habits, for running the gateway's suites against a second
 * upstream flavour. It is the embedded engine (real search, versions, conditional create,
 * validation) started with HAPI-style numeric ids and versions, behind a front that behaves as
 * HAPI's RestfulServer does on the wire:
 * - base `/fhir`; `next`/`previous` links at the base: `?_getpages=<id>&_getpagesoffset=N&_count=N&_bundletype=searchset`
 * - absolute `fullUrl`, `Location: .../Type/N/_history/N`, `ETag: W/"N"`
 * - errors as OperationOutcomes with `diagnostics: "HAPI-NNNN: ..."`; 410 for deleted; 412 when a
 *   conditional create matches several; 400 for an unknown search parameter
 * - OAuth2 client credentials in front (`POST /oauth/token`, Basic auth): FHIR calls without a live token get 401.
 * Only the wire format is added here; every answer comes from the engine.
 */

export interface HapiUpstream {
  /** The FHIR base, e.g. `http://127.0.0.1:41234/fhir`. */
  readonly baseUrl: string;
  readonly tokenUrl: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** Tokens issued so far (each lives `tokenLifetimeSeconds`). */
  readonly tokensIssued: () => number;
  /** Request lines the front received (method + path and query), for asserting what the gateway sends. */
  readonly requestLines: string[];
  /** The environment that points a gateway at this server. */
  readonly gatewayEnv: Record<string, string>;
  close(): Promise<void>;
}

export interface HapiUpstreamOptions {
  readonly tokenLifetimeSeconds?: number;
  readonly dataDir?: string;
}

interface StoredSearch {
  /** Path and query of the search at the engine, without its page window. */
  readonly path: string;
  readonly query: URLSearchParams;
}

const CLIENT_ID = 'fhir-facade-gateway';
const CLIENT_SECRET = 'hapi-flavoured-secret';

export async function startHapiUpstream(options: HapiUpstreamOptions = {}): Promise<HapiUpstream> {
  const lifetime = options.tokenLifetimeSeconds ?? 60;
  const engine: EmbeddedFhirServer = await startEmbeddedFhirServer({
    dataDir: options.dataDir ?? tempDir('ff-hapi-'),
    basePath: '/engine',
    idStyle: 'numeric',
  });
  const tokens = new Map<string, number>();
  const searches = new Map<string, StoredSearch>();
  const requestLines: string[] = [];
  let issued = 0;
  let base = '';

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requestLines.push(`${req.method} ${req.url}`);
      handle(req, Buffer.concat(chunks), res).catch((error: unknown) => {
        send(res, 500, outcome('exception', `HAPI-0000: ${String(error)}`));
      });
    });
  });

  const handle = async (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://front.invalid');
    if (url.pathname === '/oauth/token' && req.method === 'POST') return token(req, body, res);
    if (url.pathname !== '/fhir' && !url.pathname.startsWith('/fhir/'))
      return send(res, 404, outcome('not-found', 'HAPI-0000: Unknown path'));
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (!bearer || (tokens.get(bearer) ?? 0) < Date.now())
      return send(res, 401, outcome('login', 'HAPI-0644: Missing or expired access token'));
    const rest = url.pathname.slice('/fhir'.length);
    let enginePath = `${engineBase()}${rest}`;
    let query = url.searchParams;
    const pageId = query.get('_getpages');
    if (rest.replace(/\/$/, '') === '' && pageId) {
      const stored = searches.get(pageId);
      if (!stored)
        return send(res, 410, outcome('processing', `HAPI-0417: Search ID "${pageId}" does not exist`));
      enginePath = `${engineBase()}/${stored.path}`;
      query = new URLSearchParams(stored.query);
      query.set('_offset', url.searchParams.get('_getpagesoffset') ?? '0');
      query.set('_count', url.searchParams.get('_count') ?? '20');
    }
    const forwarded = await fetch(`${enginePath}${query.size > 0 ? `?${query}` : ''}`, {
      method: req.method ?? 'GET',
      headers: relayedHeaders(req.headers),
      ...(body.length > 0 ? { body: new Uint8Array(body) } : {}),
    });
    const text = await forwarded.text();
    const headers: Record<string, string> = {};
    for (const name of ['etag', 'last-modified', 'location', 'content-location']) {
      const value = forwarded.headers.get(name);
      if (value) headers[name] = value.replaceAll(engineBase(), base);
    }
    if (!text) return send(res, forwarded.status, undefined, headers);
    const answer = JSON.parse(text.replaceAll(engineBase(), base)) as Record<string, unknown>;
    if (answer.resourceType === 'OperationOutcome' && forwarded.status >= 400) hapiDiagnostics(answer);
    if (answer.resourceType === 'Bundle' && answer.type === 'searchset') pageAtBase(answer);
    send(res, forwarded.status, answer, headers);
  };

  const engineBase = () => engine.baseUrl;

  /** HAPI pages at the base with an opaque search id, whatever the search was. */
  const pageAtBase = (bundle: Record<string, unknown>) => {
    const links = (bundle.link ?? []) as { relation: string; url: string }[];
    let searchId: string | undefined;
    for (const link of links) {
      if (link.relation !== 'next' && link.relation !== 'previous') continue;
      const target = new URL(link.url);
      const offset = target.searchParams.get('_offset') ?? '0';
      const count = target.searchParams.get('_count') ?? '20';
      target.searchParams.delete('_offset');
      target.searchParams.delete('_count');
      if (!searchId) {
        searchId = randomUUID();
        searches.set(searchId, { path: target.pathname.slice('/fhir/'.length), query: target.searchParams });
      }
      link.url = `${base}?_getpages=${searchId}&_getpagesoffset=${offset}&_count=${count}&_bundletype=searchset`;
    }
  };

  const token = (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) => {
    const expected = `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`;
    const form = new URLSearchParams(body.toString('utf8'));
    if (req.headers.authorization !== expected || form.get('grant_type') !== 'client_credentials') {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"invalid_client"}');
      return;
    }
    const accessToken = randomUUID();
    tokens.set(accessToken, Date.now() + lifetime * 1000);
    issued++;
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ access_token: accessToken, token_type: 'Bearer', expires_in: lifetime }));
  };

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  base = `http://127.0.0.1:${port}/fhir`;
  const tokenUrl = `http://127.0.0.1:${port}/oauth/token`;
  return {
    baseUrl: base,
    tokenUrl,
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    tokensIssued: () => issued,
    requestLines,
    gatewayEnv: {
      FHIR_BASE_URL: base,
      FHIR_AUTH: 'client_credentials',
      FHIR_TOKEN_URL: tokenUrl,
      FHIR_CLIENT_ID: CLIENT_ID,
      FHIR_CLIENT_SECRET: CLIENT_SECRET,
      FHIR_SCOPE: 'system/*.cruds',
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await engine.close();
    },
  };
}

function relayedHeaders(incoming: http.IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of [
    'content-type',
    'if-match',
    'if-none-match',
    'if-none-exist',
    'if-modified-since',
    'prefer',
  ]) {
    const value = incoming[name];
    if (typeof value === 'string') out[name] = value;
  }
  return out;
}

/** HAPI's errors carry a numbered diagnostics line (and sometimes the search values back). */
function hapiDiagnostics(answer: Record<string, unknown>): void {
  const issues = (answer.issue ?? []) as { details?: { text?: string }; diagnostics?: string }[];
  for (const issue of issues) issue.diagnostics ??= `HAPI-0000: ${issue.details?.text ?? 'error'}`;
}

function outcome(code: string, diagnostics: string) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] };
}

function send(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    ...(payload ? { 'content-type': 'application/fhir+json;charset=utf-8' } : {}),
    'x-powered-by': 'HAPI FHIR 8.6.0 REST Server (FHIR Server; FHIR 4.0.1/R4)',
  });
  res.end(payload);
}
