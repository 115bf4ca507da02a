import { Pool, request as undiciRequest } from 'undici';
import type { Config } from '../config.js';
import { AppError } from '../errors.js';

/**
 * The only code that talks to the FHIR server. Every call has a timeout; upstream failures
 * become AppErrors (502 unreachable/failing, 504 timeout) whose public text never carries the
 * upstream URL, headers or stack. The upstream credential is the gateway's own: a caller's
 * JWT is never forwarded.
 */

export type FhirMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface FhirRequest {
  readonly method: FhirMethod;
  /** Relative to the base, already validated by the caller: `Patient/123`, `metadata`, `Observation`. */
  readonly path: string;
  readonly query?: URLSearchParams;
  readonly body?: unknown;
  readonly headers?: Readonly<Record<string, string>>;
  readonly timeoutMs?: number;
}

export interface FhirResponse<T = unknown> {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  /** The parsed JSON body, undefined when empty. */
  readonly body: T | undefined;
}

export interface FhirService {
  /** The configured base URL: used only to rewrite it out of responses, never sent to a client. */
  readonly baseUrl: string;
  request<T = unknown>(request: FhirRequest): Promise<FhirResponse<T>>;
  close(): Promise<void>;
}

/** Largest upstream body we buffer; beyond it the answer is a 502 rather than unbounded memory. */
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;
/** Renew an OAuth token this long before it expires. */
const TOKEN_RENEW_MARGIN_MS = 60_000;
const SAFE_PATH = /^[A-Za-z0-9\-._$/]*$/;

type UpstreamAuth = Config['fhir']['auth'];

export interface FhirServiceOptions {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly auth: UpstreamAuth;
}

/** Maps a transport failure to the typed error a client sees; the cause stays in our logs. */
function transportError(error: unknown): AppError {
  const name = (error as { name?: string })?.name;
  const code = (error as { code?: string })?.code;
  const timedOut =
    name === 'TimeoutError' ||
    name === 'AbortError' ||
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT' ||
    code === 'UND_ERR_CONNECT_TIMEOUT';
  return new AppError(timedOut ? 'upstream_timeout' : 'upstream_unavailable', { cause: error });
}

async function readBody(body: AsyncIterable<Uint8Array>): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > MAX_RESPONSE_BYTES)
      throw new AppError('upstream_error', { cause: new Error('upstream body too large') });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJson(text: string): unknown {
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new AppError('upstream_error', { cause: error });
  }
}

function flattenHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

/** OAuth2 client credentials (RFC 6749 section 4.4): cached, renewed before expiry, one renewal at a time. */
function clientCredentialsTokenSource(
  auth: Extract<UpstreamAuth, { kind: 'client_credentials' }>,
  timeoutMs: number,
): { get(): Promise<string>; invalidate(): void } {
  let cached: { token: string; renewAt: number } | undefined;
  let inFlight: Promise<string> | undefined;

  const fetchToken = async (): Promise<string> => {
    const form = new URLSearchParams({ grant_type: 'client_credentials' });
    if (auth.scope) form.set('scope', auth.scope);
    const basic = Buffer.from(
      `${encodeURIComponent(auth.clientId)}:${encodeURIComponent(auth.clientSecret)}`,
    ).toString('base64');
    let response: Awaited<ReturnType<typeof undiciRequest>>;
    try {
      response = await undiciRequest(auth.tokenUrl, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
          authorization: `Basic ${basic}`,
        },
        body: form.toString(),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      throw transportError(error);
    }
    const text = await readBody(response.body);
    const json = parseJson(text) as { access_token?: unknown; expires_in?: unknown } | undefined;
    if (response.statusCode !== 200 || typeof json?.access_token !== 'string') {
      throw new AppError('upstream_unavailable', {
        cause: new Error(`token endpoint answered ${response.statusCode}`),
      });
    }
    const lifetimeMs = (typeof json.expires_in === 'number' ? json.expires_in : 300) * 1000;
    cached = {
      token: json.access_token,
      renewAt: Date.now() + Math.max(lifetimeMs - TOKEN_RENEW_MARGIN_MS, 0),
    };
    return json.access_token;
  };

  return {
    get: () => {
      if (cached && Date.now() < cached.renewAt) return Promise.resolve(cached.token);
      inFlight ??= fetchToken().finally(() => {
        inFlight = undefined;
      });
      return inFlight;
    },
    invalidate: () => {
      cached = undefined;
    },
  };
}

export function createFhirService(options: FhirServiceOptions): FhirService {
  const base = new URL(options.baseUrl);
  const basePath = base.pathname.replace(/\/+$/, '');
  const pool = new Pool(base.origin, { connections: 32, keepAliveTimeout: 30_000, pipelining: 1 });
  const oauth =
    options.auth.kind === 'client_credentials'
      ? clientCredentialsTokenSource(options.auth, options.timeoutMs)
      : undefined;

  const authorization = async (): Promise<string | undefined> => {
    if (options.auth.kind === 'bearer') return `Bearer ${options.auth.token}`;
    if (oauth) return `Bearer ${await oauth.get()}`;
    return undefined;
  };

  const send = async <T>(req: FhirRequest): Promise<FhirResponse<T>> => {
    // paths are built by our own code from validated parts; this guard keeps it that way
    if (!SAFE_PATH.test(req.path) || req.path.split('/').some((s) => s === '..' || s === '.')) {
      throw new Error(`refusing unsafe FHIR path: ${req.path}`);
    }
    const query = req.query && [...req.query.keys()].length > 0 ? `?${req.query.toString()}` : '';
    const headers: Record<string, string> = { accept: 'application/fhir+json', ...req.headers };
    const auth = await authorization();
    if (auth) headers.authorization = auth;
    let body: string | undefined;
    if (req.body !== undefined) {
      body = typeof req.body === 'string' ? req.body : JSON.stringify(req.body);
      headers['content-type'] ??= 'application/fhir+json';
    }
    const timeoutMs = req.timeoutMs ?? options.timeoutMs;
    let response: Awaited<ReturnType<Pool['request']>>;
    try {
      response = await pool.request({
        path: `${basePath}/${req.path}${query}`,
        method: req.method,
        headers,
        body,
        signal: AbortSignal.timeout(timeoutMs),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (error) {
      throw transportError(error);
    }
    let text: string;
    try {
      text = await readBody(response.body);
    } catch (error) {
      throw error instanceof AppError ? error : transportError(error);
    }
    if (response.statusCode >= 500) {
      throw new AppError('upstream_error', {
        cause: new Error(`FHIR server answered ${response.statusCode}`),
      });
    }
    return {
      status: response.statusCode,
      headers: flattenHeaders(response.headers),
      body: parseJson(text) as T | undefined,
    };
  };

  return {
    baseUrl: `${base.origin}${basePath}`,
    request: async <T>(req: FhirRequest) => {
      const response = await send<T>(req);
      if (response.status === 401 && oauth) {
        // the upstream may have revoked our token early: renew once and retry
        oauth.invalidate();
        return send<T>(req);
      }
      return response;
    },
    // by the time this runs the HTTP server has drained; whatever is still in flight (a mail
    // worker's call to a hung upstream) is cut off instead of holding shutdown for the timeout
    close: () => pool.destroy(),
  };
}
