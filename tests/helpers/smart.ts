import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { startTestGateway, type TestGateway, type TestGatewayOptions } from './gateway.js';

/**
 * A SMART App Launch driven over plain HTTP, as a browser would: a cookie jar, redirects
 * followed by hand, the login and consent forms filled in and posted. For the protocol,
 * enforcement and revocation suites; tests/oauth/fhirclientLaunch.test.ts drives a real app in
 * Chromium instead.
 */

/** A free loopback port: the gateway's PUBLIC_BASE_URL must be its real address for a launch. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * A gateway whose PUBLIC_BASE_URL is where it listens (issuer, aud and redirects all real). The
 * port is free when chosen, but another file's process may take it before the gateway listens
 * (CI met EADDRINUSE once): then another port.
 */
export async function startSmartGateway(options: TestGatewayOptions = {}): Promise<TestGateway> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      return await startTestGateway({
        ...options,
        env: {
          PORT: String(port),
          HOST: '127.0.0.1',
          PUBLIC_BASE_URL: `http://127.0.0.1:${port}`,
          ...options.env,
        },
      });
    } catch (error) {
      if (attempt >= 3 || (error as { code?: unknown }).code !== 'EADDRINUSE') throw error;
    }
  }
}

export interface RegisteredApp {
  client_id: string;
  client_secret?: string;
  redirect_uris: string[];
  scopes: string[];
}

export async function registerApp(
  gw: TestGateway,
  input: {
    type?: 'public' | 'confidential';
    redirect_uris?: string[];
    scopes?: string[];
    name?: string;
  } = {},
): Promise<RegisteredApp> {
  const response = await gw.call('/admin/smart-apps', {
    method: 'POST',
    token: await gw.adminToken(),
    json: {
      name: input.name ?? 'Test SMART app',
      type: input.type ?? 'public',
      redirect_uris: input.redirect_uris ?? ['http://127.0.0.1:9/callback'],
      scopes: input.scopes ?? [
        'launch/patient',
        'openid',
        'fhirUser',
        'offline_access',
        'patient/*.rs',
        'user/*.cruds',
      ],
    },
  });
  if (response.status !== 201)
    throw new Error(`register failed: ${response.status} ${await response.text()}`);
  return (await response.json()) as RegisteredApp;
}

export function pkcePair(): { verifier: string; challenge: string } {
  const verifier = randomBytes(48).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

/** A browser's cookies, by name (paths ignored: the flows here are sequential). */
export class Browser {
  readonly cookies = new Map<string, string>();
  /** Every Set-Cookie line received, attributes included. */
  readonly setCookies: string[] = [];

  async fetch(url: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.cookies.size > 0)
      headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      this.setCookies.push(line);
      const [pair, ...attributes] = line.split(';');
      const [name, ...value] = (pair ?? '').split('=');
      if (!name) continue;
      const expired = attributes.some((a) => /expires=Thu, 01 Jan 1970/i.test(a) || /max-age=0\b/i.test(a));
      if (expired) this.cookies.delete(name.trim());
      else this.cookies.set(name.trim(), value.join('='));
    }
    return response;
  }
}

/** The value of `<input name="csrf" value="...">` on a page. */
export function csrfOf(html: string): string {
  const match = /name="csrf" value="([^"]+)"/.exec(html);
  if (!match?.[1]) throw new Error(`no CSRF token on the page: ${html.slice(0, 300)}`);
  return match[1];
}

/** The form's action on a page. */
export function actionOf(html: string): string {
  const match = /<form method="post" action="([^"]+)"/.exec(html);
  if (!match?.[1]) throw new Error('no form on the page');
  return match[1].replace(/&amp;/g, '&');
}

export interface AuthorizeParams {
  clientId: string;
  redirectUri: string;
  scope: string;
  state?: string;
  aud?: string;
  challenge?: string;
  method?: string;
  extra?: Record<string, string>;
}

export function authorizeUrl(gw: TestGateway, p: AuthorizeParams): string {
  const params = new URLSearchParams({
    response_type: 'code',
    client_id: p.clientId,
    redirect_uri: p.redirectUri,
    scope: p.scope,
    state: p.state ?? 'state-123',
    aud: p.aud ?? `${gw.deps.config.publicBaseUrl}/fhir`,
    ...(p.challenge ? { code_challenge: p.challenge, code_challenge_method: p.method ?? 'S256' } : {}),
    ...p.extra,
  });
  if (p.aud === '') params.delete('aud');
  return `${gw.url}/oauth/authorize?${params}`;
}

/** An authorization request sent and its login page opened: the browser, the page's URL and its HTML. */
export async function openLogin(
  gw: TestGateway,
  app: { client_id: string; redirect_uris: string[] },
  scope: string,
): Promise<{ browser: Browser; loginUrl: string; login: string }> {
  const browser = new Browser();
  const { challenge } = pkcePair();
  const start = await browser.fetch(
    authorizeUrl(gw, { clientId: app.client_id, redirectUri: app.redirect_uris[0]!, scope, challenge }),
  );
  const loginUrl = new URL(start.headers.get('location')!, gw.url).href;
  return { browser, loginUrl, login: await (await browser.fetch(loginUrl)).text() };
}

export interface LaunchResult {
  /** Where the browser was sent at the end (the app's redirect URI with code or error). */
  readonly location: string;
  readonly code: string | null;
  readonly state: string | null;
  readonly error: string | null;
  readonly browser: Browser;
}

async function follow(
  browser: Browser,
  gw: TestGateway,
  response: Response,
  stopAt: string,
): Promise<Response> {
  let current = response;
  for (let hops = 0; hops < 10; hops++) {
    const location = current.headers.get('location');
    if (current.status < 300 || current.status >= 400 || !location) return current;
    let target = new URL(location, gw.url);
    // the gateway's own redirects are on its public address: the reverse proxy's part, played here
    const publicOrigin = new URL(gw.deps.config.publicBaseUrl).origin;
    if (target.origin === publicOrigin) target = new URL(`${target.pathname}${target.search}`, gw.url);
    // an https public address makes the gateway's own redirects https: the TLS proxy's part, played here
    if (target.host === new URL(gw.url).host) target.protocol = 'http:';
    const next = target.href;
    if (next.startsWith(stopAt)) return current;
    current = await browser.fetch(next);
  }
  throw new Error('too many redirects');
}

/**
 * A whole launch: authorize, log in, consent (`decision`), back at the redirect URI. Stops early
 * (returning what the browser ended at) when a step does not lead where it should.
 */
export async function launch(
  gw: TestGateway,
  user: { email: string; password: string },
  p: AuthorizeParams & { decision?: 'allow' | 'deny'; beforeConsent?: () => Promise<void> },
): Promise<LaunchResult & { page?: Response }> {
  const browser = new Browser();
  const done = (location: string): LaunchResult => {
    const url = new URL(location);
    return {
      location,
      code: url.searchParams.get('code'),
      state: url.searchParams.get('state'),
      error: url.searchParams.get('error'),
      browser,
    };
  };
  let response = await follow(browser, gw, await browser.fetch(authorizeUrl(gw, p)), p.redirectUri);
  if (response.headers.get('location')?.startsWith(p.redirectUri))
    return done(response.headers.get('location')!);
  if (response.status !== 200) return { ...done(`${gw.url}/`), page: response };
  let page = await response.text();
  const login = new URLSearchParams({ csrf: csrfOf(page), email: user.email, password: user.password });
  response = await browser.fetch(new URL(actionOf(page), gw.url).href, { method: 'POST', body: login });
  response = await follow(browser, gw, response, p.redirectUri);
  if (response.headers.get('location')?.startsWith(p.redirectUri))
    return done(response.headers.get('location')!);
  if (response.status !== 200) return { ...done(`${gw.url}/`), page: response };
  page = await response.text();
  await p.beforeConsent?.();
  const consent = new URLSearchParams({ csrf: csrfOf(page), decision: p.decision ?? 'allow' });
  response = await browser.fetch(new URL(actionOf(page), gw.url).href, { method: 'POST', body: consent });
  response = await follow(browser, gw, response, p.redirectUri);
  const location = response.headers.get('location');
  if (!location?.startsWith(p.redirectUri)) return { ...done(`${gw.url}/`), page: response };
  return done(location);
}

export interface TokenAnswer {
  access_token?: string;
  token_type?: string;
  expires_in?: number;
  scope?: string;
  refresh_token?: string;
  id_token?: string;
  patient?: string;
  error?: string;
  error_description?: string;
}

/** POST /oauth/token with a form, as a public client (client_id) or a confidential one (Basic). */
export async function tokenRequest(
  gw: TestGateway,
  form: Record<string, string>,
  client: { clientId: string; secret?: string },
): Promise<{ status: number; body: TokenAnswer }> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
  const body = new URLSearchParams(form);
  if (client.secret) {
    const basic = `${encodeURIComponent(client.clientId)}:${encodeURIComponent(client.secret)}`;
    headers.authorization = `Basic ${Buffer.from(basic).toString('base64')}`;
  } else body.set('client_id', client.clientId);
  const response = await fetch(`${gw.url}/oauth/token`, { method: 'POST', headers, body });
  return { status: response.status, body: (await response.json()) as TokenAnswer };
}

/** A complete launch and code exchange; the tokens. */
export async function smartTokens(
  gw: TestGateway,
  app: RegisteredApp,
  user: { email: string; password: string },
  scope: string,
): Promise<TokenAnswer> {
  const { verifier, challenge } = pkcePair();
  const redirectUri = app.redirect_uris[0]!;
  const result = await launch(gw, user, { clientId: app.client_id, redirectUri, scope, challenge });
  if (!result.code) throw new Error(`no code: ${result.location} ${await result.page?.text()}`);
  const answer = await tokenRequest(
    gw,
    {
      grant_type: 'authorization_code',
      code: result.code,
      redirect_uri: redirectUri,
      code_verifier: verifier,
    },
    { clientId: app.client_id, ...(app.client_secret ? { secret: app.client_secret } : {}) },
  );
  if (answer.status !== 200) throw new Error(`token failed: ${JSON.stringify(answer.body)}`);
  return answer.body;
}
