import http from 'node:http';
import net from 'node:net';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { oauthStoreKey } from '../../src/oauth/adapter.js';
import type { TestGateway } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';
import {
  authorizeUrl,
  Browser,
  csrfOf,
  launch,
  openLogin,
  pkcePair,
  type RegisteredApp,
  registerApp,
  smartTokens,
  startSmartGateway,
  tokenRequest,
} from '../helpers/smart.js';

/**
 * SMART App Launch at the protocol level (https://hl7.org/fhir/smart-app-launch/app-launch.html,
 * RFC 6749, RFC 7636, RFC 9700): what a launch gives, and every way it must not work.
 */

const SCOPE = 'launch/patient openid fhirUser offline_access patient/Observation.rs';

/** The one audit entry a replayed code or refresh token leaves: by the session's patient, never the token. */
const replayEntry = (userId: string, clientId: string) =>
  expect.objectContaining({
    outcome: 'denied',
    actor_user_id: userId,
    actor_role: 'patient',
    request_id: expect.any(String),
    detail: JSON.stringify({ via: 'smart', client_id: clientId, session_revoked: true }),
  });

describe('SMART App Launch: the protocol', () => {
  let gw: TestGateway;
  let app: RegisteredApp;
  let confidential: RegisteredApp;
  let patient: { id: string; email: string; password: string };
  let redirectUri: string;

  beforeAll(async () => {
    gw = await startSmartGateway();
    app = await registerApp(gw, { redirect_uris: ['http://127.0.0.1:9/app/callback'] });
    confidential = await registerApp(gw, {
      type: 'confidential',
      redirect_uris: ['https://server-app.example.com/callback'],
    });
    redirectUri = app.redirect_uris[0]!;
    patient = await gw.seedUser({ role: 'patient' });
  });
  afterAll(() => gw.close());

  /** A code from a full launch, with its verifier. */
  async function codeFor(target = app, scope = SCOPE) {
    const { verifier, challenge } = pkcePair();
    const result = await launch(gw, patient, {
      clientId: target.client_id,
      redirectUri: target.redirect_uris[0]!,
      scope,
      challenge,
    });
    expect(result.code, result.location).toBeTruthy();
    return { code: result.code!, verifier, result };
  }

  const auditOf = (userId: string, action: string) =>
    gw.deps.db
      .selectFrom('audit_log')
      .selectAll()
      .where('actor_user_id', '=', userId)
      .where('action', '=', action)
      .execute();

  /** A token-endpoint refusal made before oidc-provider read the request, audited as its own are. */
  async function expectRefusalAudited(response: Response, status: number): Promise<void> {
    await gw.deps.auditTrail.flush();
    const entries = await gw.deps.db
      .selectFrom('audit_log')
      .select(['action', 'outcome', 'error_code', 'detail'])
      .where('request_id', '=', response.headers.get('x-request-id')!)
      .execute();
    expect(entries).toEqual([
      {
        action: 'smart.token',
        outcome: 'denied',
        error_code: 'invalid_request',
        detail: JSON.stringify({ via: 'smart', client_id: null, grant_type: null, status }),
      },
    ]);
  }

  const revokedReason = async (userId: string) =>
    (
      await gw.deps.db
        .selectFrom('sessions')
        .select('revoked_reason')
        .where('user_id', '=', userId)
        .executeTakeFirstOrThrow()
    ).revoked_reason;

  const exchange = (code: string, verifier: string | undefined, target = app, secret?: string) =>
    tokenRequest(
      gw,
      {
        grant_type: 'authorization_code',
        code,
        redirect_uri: target.redirect_uris[0]!,
        ...(verifier !== undefined ? { code_verifier: verifier } : {}),
      },
      { clientId: target.client_id, ...(secret ? { secret } : {}) },
    );

  it('is discoverable: smart-configuration (public, CORS), the CapabilityStatement oauth-uris, OpenID discovery and keys', async () => {
    const base = gw.deps.config.publicBaseUrl;
    const response = await gw.call('/fhir/.well-known/smart-configuration', {
      headers: { origin: 'https://any-app.example.com' },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('access-control-allow-origin')).toBe('*');
    const conf = (await response.json()) as Record<string, unknown>;
    expect(conf).toMatchObject({
      issuer: `${base}/oauth`,
      authorization_endpoint: `${base}/oauth/authorize`,
      token_endpoint: `${base}/oauth/token`,
      code_challenge_methods_supported: ['S256'],
      grant_types_supported: ['authorization_code', 'refresh_token'],
    });
    expect(conf.capabilities).toEqual(
      expect.arrayContaining([
        'launch-standalone',
        'client-public',
        'client-confidential-symmetric',
        'context-standalone-patient',
        'permission-patient',
        'permission-user',
        'permission-v2',
        'sso-openid-connect',
        'permission-offline',
      ]),
    );
    const metadata = (await (await gw.call('/fhir/metadata')).json()) as {
      rest: Array<{
        security: { extension: Array<{ url: string; extension: Array<{ url: string; valueUri: string }> }> };
      }>;
    };
    const uris = metadata.rest[0]!.security.extension.find((e) => e.url.endsWith('/oauth-uris'))!.extension;
    expect(Object.fromEntries(uris.map((u) => [u.url, u.valueUri]))).toMatchObject({
      authorize: `${base}/oauth/authorize`,
      token: `${base}/oauth/token`,
    });
    const openid = (await (await gw.call('/oauth/.well-known/openid-configuration')).json()) as Record<
      string,
      unknown
    >;
    expect(openid.issuer).toBe(`${base}/oauth`);
    expect(openid.token_endpoint).toBe(`${base}/oauth/token`);
    const keys = (await (await gw.call('/oauth/jwks')).json()) as {
      keys: Array<{ kid: string; d?: string }>;
    };
    const gatewayKeys = (await (await gw.call('/.well-known/jwks.json')).json()) as {
      keys: Array<{ kid: string }>;
    };
    expect(keys.keys.map((k) => k.kid)).toEqual(gatewayKeys.keys.map((k) => k.kid));
    expect(keys.keys.every((k) => k.d === undefined)).toBe(true);
  });

  it('builds every discovery URL on PUBLIC_BASE_URL, never on a Host header the caller sent, and is not cached', async () => {
    const answer = await new Promise<{ body: string; cacheControl: string | undefined }>(
      (resolve, reject) => {
        const url = new URL(`${gw.url}/oauth/.well-known/openid-configuration`);
        http
          .get(url, { headers: { host: 'evil.example', 'x-forwarded-host': 'evil.example' } }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (chunk) => {
              body += chunk;
            });
            res.on('end', () => resolve({ body, cacheControl: res.headers['cache-control'] }));
          })
          .on('error', reject);
      },
    );
    expect(answer.body).not.toContain('evil.example');
    const openid = JSON.parse(answer.body) as Record<string, unknown>;
    const base = gw.deps.config.publicBaseUrl;
    expect(openid.authorization_endpoint).toBe(`${base}/oauth/authorize`);
    expect(openid.token_endpoint).toBe(`${base}/oauth/token`);
    expect(openid.jwks_uri).toBe(`${base}/oauth/jwks`);
    expect(answer.cacheControl).toBe('no-store');
  });

  it("answers oidc-provider's own responses once, on a connection that stays open", async () => {
    // Hono is told the answer was already written; a second head would fail and destroy the connection
    const failures = vi.spyOn(console, 'error');
    try {
      for (let i = 0; i < 3; i++) {
        const response = await gw.call('/oauth/.well-known/openid-configuration');
        expect(response.status).toBe(200);
        expect(response.headers.get('x-request-id')).toBeTruthy();
        await response.arrayBuffer();
      }
      expect(failures).not.toHaveBeenCalled();
    } finally {
      failures.mockRestore();
    }
  });

  it('gives a patient a scoped JWT for the FHIR base, the patient context, an id_token with fhirUser, and a refresh token', async () => {
    const tokens = await smartTokens(gw, app, patient, SCOPE);
    const fhirBase = `${gw.deps.config.publicBaseUrl}/fhir`;
    expect(tokens.token_type).toBe('Bearer');
    expect(tokens.scope?.split(' ').sort()).toEqual(SCOPE.split(' ').sort());
    const user = await gw.deps.db
      .selectFrom('users')
      .selectAll()
      .where('id', '=', patient.id)
      .executeTakeFirstOrThrow();
    expect(tokens.patient).toBe(user.fhir_resource_id);
    expect(tokens.refresh_token).toBeTruthy();
    const claims = decodeJwt(tokens.access_token!);
    expect(claims).toMatchObject({
      iss: `${gw.deps.config.publicBaseUrl}/oauth`,
      aud: fhirBase,
      sub: patient.id,
      client_id: app.client_id,
      fhirUser: `Patient/${user.fhir_resource_id}`,
      role: 'patient',
      ver: 0,
    });
    expect(claims.exp! - claims.iat!).toBe(gw.deps.config.jwt.accessTokenTtlSeconds);
    const idToken = decodeJwt(tokens.id_token!);
    expect(idToken.fhirUser).toBe(`${fhirBase}/Patient/${user.fhir_resource_id}`);
    expect(idToken.aud).toBe(app.client_id);
    const read = await gw.call('/fhir/Observation', { token: tokens.access_token! });
    expect(read.status).toBe(200);
  });

  describe('every launch asks for the password (no single sign-on between apps)', () => {
    /** The page a browser that just completed a launch lands on when it opens `url`. */
    async function landing(browser: Browser, url: string): Promise<string> {
      let response = await browser.fetch(url);
      for (let i = 0; i < 5 && response.status >= 300 && response.status < 400; i++)
        response = await browser.fetch(new URL(response.headers.get('location') ?? '', gw.url).href);
      return response.text();
    }

    it.each([
      ['/oauth/authorize', (url: string) => url],
      [
        '/oauth/authorize/ (a trailing slash)',
        (url: string) => url.replace('/oauth/authorize?', '/oauth/authorize/?'),
      ],
      // oidc-provider's router ignores case: these are its authorization endpoint too
      ['/oauth/AUTHORIZE', (url: string) => url.replace('/oauth/authorize?', '/oauth/AUTHORIZE?')],
      ['/oauth/Authorize/', (url: string) => url.replace('/oauth/authorize?', '/oauth/Authorize/?')],
    ])('%s: the login page again, not a consent for the last login', async (_how, spell) => {
      const signedIn = await codeFor();
      const { challenge } = pkcePair();
      const url = authorizeUrl(gw, {
        clientId: confidential.client_id,
        redirectUri: confidential.redirect_uris[0]!,
        scope: SCOPE,
        challenge,
      });
      const page = await landing(signedIn.result.browser, spell(url));
      expect(page).toContain('name="password"');
    });

    it('answers prompt=none login_required with or without a live session: no app learns whether one exists', async () => {
      const signedIn = await codeFor();
      const { challenge } = pkcePair();
      const url = authorizeUrl(gw, {
        clientId: app.client_id,
        redirectUri,
        scope: SCOPE,
        challenge,
        extra: { prompt: 'none' },
      });
      for (const browser of [signedIn.result.browser, new Browser()]) {
        const response = await browser.fetch(url);
        expect(response.status).toBe(303);
        const location = new URL(response.headers.get('location') ?? '');
        expect(`${location.origin}${location.pathname}`).toBe(redirectUri);
        expect(location.searchParams.get('error')).toBe('login_required');
      }
    });
  });

  it('serves the public keys to any origin: a browser app verifies its id_token with them', async () => {
    for (const path of ['/oauth/jwks', '/.well-known/jwks.json']) {
      const response = await fetch(`${gw.url}${path}`, { headers: { origin: 'https://any-app.example' } });
      expect(response.status, path).toBe(200);
      expect(response.headers.get('access-control-allow-origin'), path).toBe('*');
      expect(response.headers.get('access-control-allow-credentials'), path).toBeNull();
    }
  });

  it('serves the whole key set at /oauth/jwks in any spelling oidc-provider would route', async () => {
    const keys = await (await fetch(`${gw.url}/oauth/jwks`)).text();
    for (const path of ['/oauth/JWKS', '/oauth/jwks/'])
      expect(await (await fetch(`${gw.url}${path}`)).text()).toBe(keys);
  });

  it('answers /oauth itself 404, not a 500', async () => {
    for (const path of ['/oauth', '/oauth/', '/oauth//']) {
      for (const method of ['GET', 'POST']) {
        const response = await fetch(`${gw.url}${path}`, { method });
        expect(response.status, `${method} ${path}`).toBe(404);
      }
    }
  });

  it('keeps no code, refresh token or login session id in the clear (DESIGN.md: refresh tokens stored hashed)', async () => {
    const { code, verifier, result } = await codeFor();
    const cookies = [...result.browser.cookies.values()].flatMap((v) => v.match(/[A-Za-z0-9_-]{20,}/g) ?? []);
    expect(cookies.length).toBeGreaterThan(0);
    const tokens = (await exchange(code, verifier)).body;
    expect(tokens.refresh_token).toBeTruthy();
    const dump = JSON.stringify(await gw.deps.db.selectFrom('oauth_store').selectAll().execute());
    expect(dump).not.toContain(code);
    expect(dump).not.toContain(tokens.refresh_token);
    for (const value of cookies) {
      const at = dump.indexOf(value);
      if (at >= 0)
        console.log('FOUND', [...result.browser.cookies.keys()], dump.slice(Math.max(0, at - 300), at + 80));
      expect(dump).not.toContain(value);
    }
    // and what is kept still works: the refresh token redeems
    const refreshed = await tokenRequest(
      gw,
      { grant_type: 'refresh_token', refresh_token: tokens.refresh_token as string },
      { clientId: app.client_id },
    );
    expect(refreshed.status).toBe(200);
  });

  it('issues no refresh token without offline_access', async () => {
    const tokens = await smartTokens(gw, app, patient, 'launch/patient patient/Observation.rs');
    expect(tokens.refresh_token).toBeUndefined();
    expect(tokens.id_token).toBeUndefined();
  });

  it('refuses an authorization request without state (SMART App Launch requires it), at the redirect URI', async () => {
    const { challenge } = pkcePair();
    for (const state of [undefined, '']) {
      const url = new URL(
        authorizeUrl(gw, { clientId: app.client_id, redirectUri, scope: SCOPE, challenge }),
      );
      if (state === undefined) url.searchParams.delete('state');
      else url.searchParams.set('state', state);
      const response = await fetch(url, { redirect: 'manual' });
      expect(response.status).toBe(303);
      const location = new URL(response.headers.get('location') ?? '');
      expect(`${location.origin}${location.pathname}`).toBe(redirectUri);
      expect(location.searchParams.get('error')).toBe('invalid_request');
      expect(location.searchParams.get('error_description')).toMatch(/state/);
    }
  });

  it('echoes state exactly, whatever characters it holds', async () => {
    const state = 'a b&c=d/é?%25~';
    const { challenge } = pkcePair();
    const result = await launch(gw, patient, {
      clientId: app.client_id,
      redirectUri,
      scope: SCOPE,
      challenge,
      state,
    });
    expect(result.state).toBe(state);
    expect(result.location.startsWith(`${redirectUri}?`)).toBe(true);
  });

  it('keeps codes 60 seconds at most, bound to the client', async () => {
    const { code } = await codeFor();
    const row = await gw.deps.db
      .selectFrom('oauth_store')
      .select('payload')
      .where('model', '=', 'AuthorizationCode')
      .where('id', '=', oauthStoreKey(code))
      .executeTakeFirstOrThrow();
    const payload = JSON.parse(row.payload) as { exp: number; iat: number; clientId: string };
    expect(payload.exp - payload.iat).toBeLessThanOrEqual(60);
    expect(payload.clientId).toBe(app.client_id);
  });

  describe('PKCE (RFC 7636), S256 only', () => {
    it('refuses an exchange without the verifier', async () => {
      const { code } = await codeFor();
      const answer = await exchange(code, undefined);
      expect(answer.status).toBe(400);
      expect(answer.body.error).toBe('invalid_grant');
    });

    it('refuses a wrong verifier', async () => {
      const { code } = await codeFor();
      const answer = await exchange(code, pkcePair().verifier);
      expect(answer.status).toBe(400);
      expect(answer.body.error).toBe('invalid_grant');
      expect(answer.body.access_token).toBeUndefined();
    });

    it('refuses the plain method: the app is sent back with invalid_request and no code', async () => {
      const verifier = pkcePair().verifier;
      const result = await launch(gw, patient, {
        clientId: app.client_id,
        redirectUri,
        scope: SCOPE,
        challenge: verifier,
        method: 'plain',
      });
      expect(result.code).toBeNull();
      expect(result.error).toBe('invalid_request');
    });

    it('refuses an authorization request without a challenge', async () => {
      const result = await launch(gw, patient, { clientId: app.client_id, redirectUri, scope: SCOPE });
      expect(result.code).toBeNull();
      expect(result.error).toBe('invalid_request');
    });
  });

  it('refuses a code used twice, and revokes what the first use gave', async () => {
    const { code, verifier } = await codeFor();
    const first = await exchange(code, verifier);
    expect(first.status).toBe(200);
    const second = await exchange(code, verifier);
    expect(second.status).toBe(400);
    expect(second.body.error).toBe('invalid_grant');
    // RFC 6749 section 4.1.2: the tokens of a replayed code should be revoked
    const read = await gw.call('/fhir/Observation', { token: first.body.access_token! });
    expect(read.status).toBe(401);
    const refresh = await tokenRequest(
      gw,
      { grant_type: 'refresh_token', refresh_token: first.body.refresh_token! },
      { clientId: app.client_id },
    );
    expect(refresh.body.error).toBe('invalid_grant');
  });

  it("audits a replayed code as smart.code_reuse, by the session's user, with no code in the entry", async () => {
    const person = await gw.seedUser({ role: 'patient' });
    const { verifier, challenge } = pkcePair();
    const { code } = await launch(gw, person, {
      clientId: app.client_id,
      redirectUri,
      scope: SCOPE,
      challenge,
    });
    expect((await exchange(code!, verifier)).status).toBe(200);
    expect((await exchange(code!, verifier)).body.error).toBe('invalid_grant');
    const entries = await auditOf(person.id, 'smart.code_reuse');
    expect(entries).toEqual([replayEntry(person.id, app.client_id)]);
    expect(JSON.stringify(entries)).not.toContain(code);
    expect(await revokedReason(person.id)).toBe('authorization_code_reuse');
  });

  it('refuses an expired code', async () => {
    const { code, verifier } = await codeFor();
    const row = await gw.deps.db
      .selectFrom('oauth_store')
      .select('payload')
      .where('model', '=', 'AuthorizationCode')
      .where('id', '=', oauthStoreKey(code))
      .executeTakeFirstOrThrow();
    const payload = JSON.parse(row.payload) as { exp: number };
    // as if its 60 seconds had passed
    payload.exp = Math.floor(Date.now() / 1000) - 1;
    await gw.deps.db
      .updateTable('oauth_store')
      .set({ payload: JSON.stringify(payload) })
      .where('model', '=', 'AuthorizationCode')
      .where('id', '=', oauthStoreKey(code))
      .execute();
    const answer = await exchange(code, verifier);
    expect(answer.status).toBe(400);
    expect(answer.body.error).toBe('invalid_grant');
  });

  it('refuses a code presented with another redirect_uri', async () => {
    const other = await registerApp(gw, { redirect_uris: [redirectUri, 'http://127.0.0.1:9/other'] });
    const { code, verifier } = await codeFor(other);
    const answer = await tokenRequest(
      gw,
      {
        grant_type: 'authorization_code',
        code,
        redirect_uri: 'http://127.0.0.1:9/other',
        code_verifier: verifier,
      },
      { clientId: other.client_id },
    );
    expect(answer.body.error).toBe('invalid_grant');
  });

  it('refuses a code presented by another client', async () => {
    const { code, verifier } = await codeFor();
    const other = await registerApp(gw, { redirect_uris: [redirectUri] });
    const answer = await tokenRequest(
      gw,
      { grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier },
      { clientId: other.client_id },
    );
    expect(answer.body.error).toBe('invalid_grant');
  });

  describe('redirect URIs: exact match, never an open redirect', () => {
    const attempts = [
      ['an unregistered URI', 'https://evil.example.com/callback'],
      ['a registered URI with a different path', 'http://127.0.0.1:9/app/callback/../../evil'],
      [
        'a registered URI with an extra query',
        'http://127.0.0.1:9/app/callback?next=https://evil.example.com',
      ],
      ['a registered URI with a different port', 'http://127.0.0.1:10/app/callback'],
      ['a prefix of a registered URI', 'http://127.0.0.1:9/app/'],
      ['a registered URI with a fragment', 'http://127.0.0.1:9/app/callback#x'],
      ['a userinfo trick', 'http://127.0.0.1:9@evil.example.com/app/callback'],
    ];
    it.each(attempts)('shows an error page for %s and sends the browser nowhere', async (_label, uri) => {
      const browser = new Browser();
      const response = await browser.fetch(
        authorizeUrl(gw, {
          clientId: app.client_id,
          redirectUri: uri,
          scope: SCOPE,
          challenge: pkcePair().challenge,
        }),
      );
      expect(response.status).toBe(400);
      expect(response.headers.get('location')).toBeNull();
      expect(response.headers.get('content-type')).toMatch(/text\/html/);
      const page = await response.text();
      expect(page).toContain('invalid_redirect_uri');
      expect(page).not.toContain('evil.example.com');
    });

    it('shows an error page for an unknown client', async () => {
      const response = await new Browser().fetch(
        authorizeUrl(gw, {
          clientId: 'no-such-app',
          redirectUri,
          scope: SCOPE,
          challenge: pkcePair().challenge,
        }),
      );
      expect(response.status).toBe(400);
      expect(response.headers.get('location')).toBeNull();
    });
  });

  it("refuses an aud that is not this server's FHIR base, and a missing one", async () => {
    const base = gw.deps.config.publicBaseUrl;
    for (const aud of [
      'https://other-ehr.example.com/fhir',
      `${base}/fhir//`,
      `${base}/fhir/Patient`,
      `${base}/FHIR`,
      `${base}/fhir/.`,
      '',
    ]) {
      const result = await launch(gw, patient, {
        clientId: app.client_id,
        redirectUri,
        scope: SCOPE,
        challenge: pkcePair().challenge,
        aud,
      });
      expect(result.code, aud).toBeNull();
      expect(result.error).toBe('invalid_request');
    }
  });

  it('takes the FHIR base with one trailing slash as aud (fhirclient sends the iss it was given), and the token is for the base', async () => {
    const { verifier, challenge } = pkcePair();
    const aud = `${gw.deps.config.publicBaseUrl}/fhir/`;
    const result = await launch(gw, patient, {
      clientId: app.client_id,
      redirectUri,
      scope: SCOPE,
      challenge,
      aud,
    });
    expect(result.code, result.location).toBeTruthy();
    const answer = await tokenRequest(
      gw,
      {
        grant_type: 'authorization_code',
        code: result.code!,
        redirect_uri: redirectUri,
        code_verifier: verifier,
      },
      { clientId: app.client_id },
    );
    expect(answer.status).toBe(200);
    expect(decodeJwt(answer.body.access_token!).aud).toBe(`${gw.deps.config.publicBaseUrl}/fhir`);
  });

  it.each<[string, 'patient' | 'practitioner', string[], string, string[]]>([
    // docs/smart.md's own example
    [
      'patient/*.cruds of an app registered for patient/Observation.rs',
      'patient',
      ['launch/patient', 'patient/Observation.rs'],
      'launch/patient patient/*.cruds',
      ['launch/patient', 'patient/Observation.rs'],
    ],
    [
      'patient/*.cruds of an app registered for patient/*.rs',
      'patient',
      ['launch/patient', 'patient/*.rs'],
      'launch/patient patient/*.cruds',
      ['launch/patient', 'patient/*.rs'],
    ],
    [
      "user/*.cruds, narrowed by a practitioner's role",
      'practitioner',
      ['openid', 'fhirUser', 'user/*.cruds'],
      'openid fhirUser user/*.cruds',
      ['fhirUser', 'openid', 'user/*.crus'],
    ],
    [
      'the SMART v1 patient/*.*',
      'patient',
      ['launch/patient', 'patient/*.rs'],
      'launch/patient patient/*.*',
      ['launch/patient', 'patient/*.rs'],
    ],
  ])(
    'grants the token what the consent page showed for %s',
    async (_what, role, registered, asked, granted) => {
      const narrowing = await registerApp(gw, { redirect_uris: [redirectUri], scopes: registered });
      const person = await gw.seedUser({ role });
      const tokens = await smartTokens(gw, narrowing, person, asked);
      expect(tokens.scope?.split(' ').sort()).toEqual(granted);
      expect((decodeJwt(tokens.access_token!).scope as string).split(' ').sort()).toEqual(granted);
      if (role === 'patient') {
        const search = await gw.call('/fhir/Observation', { token: tokens.access_token! });
        expect(search.status).toBe(200);
      }
    },
  );

  it('drops a scope the app is not registered for from the grant', async () => {
    const narrow = await registerApp(gw, {
      redirect_uris: [redirectUri],
      scopes: ['launch/patient', 'openid', 'fhirUser', 'patient/Observation.rs'],
    });
    const tokens = await smartTokens(
      gw,
      narrow,
      patient,
      'launch/patient openid fhirUser offline_access patient/Observation.rs patient/Condition.rs',
    );
    expect(tokens.scope?.split(' ').sort()).toEqual([
      'fhirUser',
      'launch/patient',
      'openid',
      'patient/Observation.rs',
    ]);
    expect(tokens.refresh_token).toBeUndefined();
    const condition = await gw.call('/fhir/Condition', { token: tokens.access_token! });
    expect(condition.status).toBe(403);
  });

  it('grants a wildcard whole when the app is registered for it and for a narrower scope too', async () => {
    const both = await registerApp(gw, {
      redirect_uris: [redirectUri],
      scopes: ['launch/patient', 'openid', 'fhirUser', 'patient/*.rs', 'patient/Patient.rs'],
    });
    const tokens = await smartTokens(gw, both, patient, 'launch/patient openid fhirUser patient/*.rs');
    expect(tokens.scope?.split(' ').sort()).toEqual(['fhirUser', 'launch/patient', 'openid', 'patient/*.rs']);
    expect((await gw.call('/fhir/Observation', { token: tokens.access_token! })).status).toBe(200);
    // the seeded patient has no FHIR record: 404, not a refusal for want of scope
    const own = await gw.call(`/fhir/Patient/${tokens.patient}`, { token: tokens.access_token! });
    expect(own.status).toBe(404);
  });

  it('drops what the role does not allow: a patient asking for user/*.cruds gets nothing of it', async () => {
    const tokens = await smartTokens(gw, app, patient, 'launch/patient patient/Observation.rs user/*.cruds');
    expect(tokens.scope?.split(' ').sort()).toEqual(['launch/patient', 'patient/Observation.rs']);
  });

  it('shows the consent page with what is asked, in plain words, and a Deny that tells the app access_denied', async () => {
    const { challenge } = pkcePair();
    const result = await launch(gw, patient, {
      clientId: app.client_id,
      redirectUri,
      scope: SCOPE,
      challenge,
      decision: 'deny',
    });
    expect(result.code).toBeNull();
    expect(result.error).toBe('access_denied');
    expect(result.state).toBe('state-123');
  });

  describe('confidential clients (client-confidential-symmetric)', () => {
    it('exchange a code with their secret (HTTP Basic)', async () => {
      const { code, verifier } = await codeFor(confidential);
      const answer = await exchange(code, verifier, confidential, confidential.client_secret);
      expect(answer.status).toBe(200);
      expect(answer.body.access_token).toBeTruthy();
    });

    it('are refused with a wrong secret, or none', async () => {
      const { code, verifier } = await codeFor(confidential);
      const wrong = await exchange(code, verifier, confidential, `${confidential.client_secret}x`);
      expect(wrong.status).toBe(401);
      expect(wrong.body.error).toBe('invalid_client');
      const none = await exchange(code, verifier, confidential);
      expect(none.status).toBe(401);
      expect(none.body.error).toBe('invalid_client');
      // the code is still unused: the right secret works
      const right = await exchange(code, verifier, confidential, confidential.client_secret);
      expect(right.status).toBe(200);
    });

    it('are refused when they authenticate twice in one request (Basic and a secret in the body), and the code stays usable', async () => {
      const { code, verifier } = await codeFor(confidential);
      const basic = Buffer.from(`${confidential.client_id}:${confidential.client_secret}`).toString('base64');
      const twice = await fetch(`${gw.url}/oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}` },
        body: new URLSearchParams({
          grant_type: 'authorization_code',
          code,
          redirect_uri: confidential.redirect_uris[0]!,
          code_verifier: verifier,
          client_secret: confidential.client_secret!,
        }),
      });
      expect(twice.status).toBe(400);
      expect(await twice.json()).toMatchObject({ error: 'invalid_request' });
      await expectRefusalAudited(twice, 400);
      const once = await exchange(code, verifier, confidential, confidential.client_secret);
      expect(once.status).toBe(200);
    });

    it.each(['code_verifier', 'redirect_uri', 'grant_type'])(
      'are refused when a parameter comes twice (%s; RFC 6749 section 3.2), and the code stays usable',
      async (twice) => {
        const { code, verifier } = await codeFor(confidential);
        const basic = Buffer.from(`${confidential.client_id}:${confidential.client_secret}`).toString(
          'base64',
        );
        const form = new URLSearchParams({
          grant_type: 'authorization_code',
          code,
          redirect_uri: confidential.redirect_uris[0]!,
          code_verifier: verifier,
        });
        form.append(twice, form.get(twice)!);
        const answer = await fetch(`${gw.url}/oauth/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}` },
          body: form,
        });
        expect(answer.status).toBe(400);
        expect(await answer.json()).toMatchObject({ error: 'invalid_request' });
        const once = await exchange(code, verifier, confidential, confidential.client_secret);
        expect(once.status).toBe(200);
      },
    );

    it('never have their secret stored in clear', async () => {
      const row = await gw.deps.db
        .selectFrom('smart_apps')
        .selectAll()
        .where('client_id', '=', confidential.client_id)
        .executeTakeFirstOrThrow();
      expect(row.secret_hash).toMatch(/^[0-9a-f]{64}$/);
      const dump = JSON.stringify(await gw.deps.db.selectFrom('oauth_store').selectAll().execute());
      expect(dump).not.toContain(confidential.client_secret!);
      expect(JSON.stringify(row)).not.toContain(confidential.client_secret!);
    });
  });

  describe('CORS at the token and revocation endpoints', () => {
    const appOrigin = () => new URL(redirectUri).origin;
    const preflight = (path: string, origin: string) =>
      gw.call(path, {
        method: 'OPTIONS',
        headers: {
          origin,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'content-type',
        },
      });

    it("let a public app's origin through the preflight, as a browser app needs before its POST", async () => {
      for (const path of ['/oauth/token', '/oauth/revoke']) {
        const response = await preflight(path, appOrigin());
        expect(response.status, path).toBe(204);
        expect(response.headers.get('access-control-allow-origin'), path).toBe(appOrigin());
        expect(response.headers.get('access-control-allow-methods'), path).toContain('POST');
      }
    });

    it('let no other origin through the preflight: not an unknown site, not null, not a confidential app', async () => {
      const confidentialOrigin = new URL(confidential.redirect_uris[0]!).origin;
      for (const path of ['/oauth/token', '/oauth/revoke', '/oauth/TOKEN']) {
        for (const origin of ['https://evil.example', 'null', confidentialOrigin]) {
          const response = await preflight(path, origin);
          expect(response.headers.get('access-control-allow-origin'), `${path} ${origin}`).toBeNull();
        }
      }
    });

    it("answer a public app's origin on the request itself, and refuse another origin for that app", async () => {
      const tokens = await smartTokens(gw, app, patient, SCOPE);
      const refresh = (origin: string, refreshToken: string) =>
        fetch(`${gw.url}/oauth/token`, {
          method: 'POST',
          headers: { origin, 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({
            grant_type: 'refresh_token',
            refresh_token: refreshToken,
            client_id: app.client_id,
          }),
        });
      const elsewhere = await refresh('https://evil.example.com', tokens.refresh_token!);
      expect(elsewhere.status).toBe(400);
      expect(elsewhere.headers.get('access-control-allow-origin')).toBeNull();
      const own = await refresh(appOrigin(), tokens.refresh_token!);
      expect(own.status).toBe(200);
      expect(own.headers.get('access-control-allow-origin')).toBe(appOrigin());
      // RFC 6749 section 5.1
      expect(own.headers.get('cache-control')).toBe('no-store');
      expect(own.headers.get('pragma')).toBe('no-cache');
    });

    it('answer no origin when no app is known (no client_id, an unknown one, a bogus token)', async () => {
      const post = (path: string, form: Record<string, string>) =>
        fetch(`${gw.url}${path}`, {
          method: 'POST',
          headers: {
            origin: 'https://evil.example.com',
            'content-type': 'application/x-www-form-urlencoded',
          },
          body: new URLSearchParams(form),
        });
      for (const [path, form] of [
        ['/oauth/token', { grant_type: 'refresh_token', refresh_token: 'bogus' }],
        ['/oauth/token', { grant_type: 'authorization_code', code: 'x', client_id: 'nope' }],
        ['/oauth/TOKEN', { grant_type: 'refresh_token', refresh_token: 'bogus' }],
        ['/oauth/revoke', { token: 'x' }],
      ] as const) {
        const response = await post(path, form);
        expect(response.status, path).toBeGreaterThanOrEqual(400);
        expect(
          response.headers.get('access-control-allow-origin'),
          `${path} ${JSON.stringify(form)}`,
        ).toBeNull();
      }
    });
  });

  describe('refresh tokens', () => {
    it('rotate on every use; a spent one revokes the grant and every token of it', async () => {
      const tokens = await smartTokens(gw, app, patient, SCOPE);
      const first = await tokenRequest(
        gw,
        { grant_type: 'refresh_token', refresh_token: tokens.refresh_token! },
        { clientId: app.client_id },
      );
      expect(first.status).toBe(200);
      expect(first.body.refresh_token).toBeTruthy();
      expect(first.body.refresh_token).not.toBe(tokens.refresh_token);
      expect(first.body.patient).toBeTruthy();
      const reuse = await tokenRequest(
        gw,
        { grant_type: 'refresh_token', refresh_token: tokens.refresh_token! },
        { clientId: app.client_id },
      );
      expect(reuse.body.error).toBe('invalid_grant');
      const newest = await tokenRequest(
        gw,
        { grant_type: 'refresh_token', refresh_token: first.body.refresh_token! },
        { clientId: app.client_id },
      );
      expect(newest.body.error).toBe('invalid_grant');
      const read = await gw.call('/fhir/Observation', { token: first.body.access_token! });
      expect(read.status).toBe(401);
    });

    it("audit a spent one presented again as auth.refresh_reuse, by the session's user, with no token in the entry", async () => {
      const person = await gw.seedUser({ role: 'patient' });
      const tokens = await smartTokens(gw, app, person, SCOPE);
      const form = { grant_type: 'refresh_token', refresh_token: tokens.refresh_token! };
      expect((await tokenRequest(gw, form, { clientId: app.client_id })).status).toBe(200);
      expect((await tokenRequest(gw, form, { clientId: app.client_id })).body.error).toBe('invalid_grant');
      // the session is revoked by the first reuse: a second one is refused without a second entry
      expect((await tokenRequest(gw, form, { clientId: app.client_id })).body.error).toBe('invalid_grant');
      const entries = await auditOf(person.id, 'auth.refresh_reuse');
      expect(entries).toEqual([replayEntry(person.id, app.client_id)]);
      expect(JSON.stringify(entries)).not.toContain(tokens.refresh_token);
      expect(await revokedReason(person.id)).toBe('refresh_token_reuse');
    });

    /** A token request as fhirclient sends a refresh by default: no client_id, no Authorization. */
    const anonymousRefresh = async (refreshToken: string, headers: Record<string, string> = {}) => {
      const response = await fetch(`${gw.url}/oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }),
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };

    it('need not name a public app (SMART: a public app cannot authenticate), and still rotate and catch a spent one', async () => {
      const tokens = await smartTokens(gw, app, patient, SCOPE);
      const first = await anonymousRefresh(tokens.refresh_token!);
      expect(first.status, JSON.stringify(first.body)).toBe(200);
      expect(first.body.refresh_token).toBeTruthy();
      expect(first.body.refresh_token).not.toBe(tokens.refresh_token);
      expect(first.body.scope).toBe(tokens.scope);
      const read = await gw.call('/fhir/Observation', { token: first.body.access_token as string });
      expect(read.status).toBe(200);
      expect((await anonymousRefresh(tokens.refresh_token!)).body.error).toBe('invalid_grant');
      // the spent token revoked the grant: the newest one is gone too (unknown, its app cannot be told)
      const newest = await anonymousRefresh(first.body.refresh_token as string);
      expect(newest.status).toBe(400);
      expect(newest.body.access_token).toBeUndefined();
    });

    it('need not name a public app in a chunked body either', async () => {
      const tokens = await smartTokens(gw, app, patient, SCOPE);
      const form = `grant_type=refresh_token&refresh_token=${encodeURIComponent(tokens.refresh_token!)}`;
      const response = await fetch(`${gw.url}/oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        // a stream body goes chunked: no Content-Length
        body: new Blob([form]).stream(),
        duplex: 'half',
      } as RequestInit);
      expect(response.status).toBe(200);
      expect(((await response.json()) as { refresh_token?: string }).refresh_token).toBeTruthy();
    });

    it('answer a token request cut off mid-body without a failure of ours, and refuse one over 56 KiB', async () => {
      // oidc-provider loads on the first /oauth request: loaded before, the cut-off body is read at once
      await fetch(`${gw.url}/oauth/.well-known/openid-configuration`);
      const failures = vi.spyOn(gw.deps.logger, 'error');
      const { hostname, port } = new URL(gw.url);
      await new Promise<void>((resolve, reject) => {
        const socket = net.connect(Number(port), hostname, () => {
          socket.write(
            'POST /oauth/token HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=',
          );
          setTimeout(() => {
            socket.destroy();
            resolve();
          }, 100);
        });
        socket.on('error', reject);
      });
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(failures).not.toHaveBeenCalled();
      failures.mockRestore();
      const tooLarge = await fetch(`${gw.url}/oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `grant_type=refresh_token&refresh_token=${'x'.repeat(57 * 1024)}`,
      });
      expect(tooLarge.status).toBe(413);
      // in OAuth's shape, as every other answer of the token endpoint (RFC 6749 section 5.2)
      expect(await tooLarge.json()).toMatchObject({ error: 'invalid_request' });
      expect(tooLarge.headers.get('cache-control')).toBe('no-store');
      await expectRefusalAudited(tooLarge, 413);
    });

    it('works with fhirclient refreshing as it does by default (no client_id)', async () => {
      const tokens = await smartTokens(gw, app, patient, SCOPE);
      const { default: smart } = await import('fhirclient');
      const client = smart({ session: {} } as never, {} as never).client({
        serverUrl: `${gw.deps.config.publicBaseUrl}/fhir`.replace(gw.deps.config.publicBaseUrl, gw.url),
        tokenUri: `${gw.url}/oauth/token`,
        clientId: app.client_id,
        tokenResponse: tokens as never,
      });
      await client.refresh();
      expect(client.state.tokenResponse?.access_token).toBeTruthy();
      expect(client.state.tokenResponse?.access_token).not.toBe(tokens.access_token);
      expect(client.state.tokenResponse?.refresh_token).not.toBe(tokens.refresh_token);
    });

    it('still make a confidential app authenticate, and refuse an unknown token, without a client_id', async () => {
      const tokens = await smartTokens(gw, confidential, patient, SCOPE);
      const unnamed = await anonymousRefresh(tokens.refresh_token!);
      expect(unnamed.status).toBe(400);
      expect(unnamed.body.error).toBe('invalid_request');
      const badSecret = await anonymousRefresh(tokens.refresh_token!, {
        authorization: `Basic ${Buffer.from(`${confidential.client_id}:wrong`).toString('base64')}`,
      });
      expect(badSecret.status).toBe(401);
      const unknown = await anonymousRefresh('not-a-refresh-token');
      expect(unknown.status).toBe(400);
      expect(unknown.body.error).toBe('invalid_request');
      // and the confidential app's token still works for it
      const right = await tokenRequest(
        gw,
        { grant_type: 'refresh_token', refresh_token: tokens.refresh_token! },
        { clientId: confidential.client_id, secret: confidential.client_secret! },
      );
      expect(right.status).toBe(200);
    });

    it("refuses app A's refresh token presented by app B", async () => {
      const appB = await registerApp(gw, {
        type: 'confidential',
        redirect_uris: ['https://b.example.com/cb'],
      });
      const tokensA = await smartTokens(gw, app, patient, SCOPE);
      const answer = await tokenRequest(
        gw,
        { grant_type: 'refresh_token', refresh_token: tokensA.refresh_token! },
        { clientId: appB.client_id, secret: appB.client_secret! },
      );
      expect(answer.body.error).toBe('invalid_grant');
      expect(answer.body.access_token).toBeUndefined();
      // A's own token keeps working: B learnt nothing and spent nothing
      const own = await tokenRequest(
        gw,
        { grant_type: 'refresh_token', refresh_token: tokensA.refresh_token! },
        { clientId: app.client_id },
      );
      expect(own.status).toBe(200);
    });

    it('end at the revocation endpoint (RFC 7009), with the access tokens of their grant', async () => {
      const tokens = await smartTokens(gw, app, patient, SCOPE);
      const revoked = await fetch(`${gw.url}/oauth/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: tokens.refresh_token!, client_id: app.client_id }),
      });
      expect(revoked.status).toBe(200);
      expect((await gw.call('/fhir/Observation', { token: tokens.access_token! })).status).toBe(401);
    });

    it('ended at the revocation endpoint are not audited as a reuse', async () => {
      const person = await gw.seedUser({ role: 'patient' });
      const tokens = await smartTokens(gw, app, person, SCOPE);
      const revoked = await fetch(`${gw.url}/oauth/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: tokens.refresh_token!, client_id: app.client_id }),
      });
      expect(revoked.status).toBe(200);
      expect(await revokedReason(person.id)).toBe('oauth_grant_revoked');
      expect(await auditOf(person.id, 'auth.refresh_reuse')).toEqual([]);
    });
  });

  describe('the login and consent forms', () => {
    /** A browser at the login page of a fresh launch: its URL and its HTML. */
    const toLogin = () => openLogin(gw, app, SCOPE);

    async function toConsent() {
      const browser = new Browser();
      const { challenge } = pkcePair();
      let response = await browser.fetch(
        authorizeUrl(gw, { clientId: app.client_id, redirectUri, scope: SCOPE, challenge }),
      );
      const loginUrl = new URL(response.headers.get('location')!, gw.url).href;
      response = await browser.fetch(loginUrl);
      const login = await response.text();
      response = await browser.fetch(`${loginUrl}/login`, {
        method: 'POST',
        body: new URLSearchParams({ csrf: csrfOf(login), email: patient.email, password: patient.password }),
      });
      while (response.status === 303 && !response.headers.get('location')!.includes('/interaction/')) {
        response = await browser.fetch(new URL(response.headers.get('location')!, gw.url).href);
      }
      const consentUrl = new URL(response.headers.get('location')!, gw.url).href;
      const page = await (await browser.fetch(consentUrl)).text();
      return { browser, consentUrl, page, loginCsrf: csrfOf(login) };
    }

    it('refuses a consent post without the CSRF token of its interaction, and grants nothing', async () => {
      const { browser, consentUrl, loginCsrf } = await toConsent();
      for (const csrf of ['', 'forged', loginCsrf]) {
        const response = await browser.fetch(`${consentUrl}/consent`, {
          method: 'POST',
          body: new URLSearchParams({ csrf, decision: 'allow' }),
        });
        expect(response.status).toBe(403);
        expect(response.headers.get('location')).toBeNull();
      }
    });

    it('answers a login post that is not a urlencoded form 400, never 500, and the form still works after', async () => {
      const { browser, loginUrl, login } = await toLogin();
      for (const type of ['multipart/form-data', 'multipart/form-data; boundary=b', 'application/json']) {
        const response = await browser.fetch(`${loginUrl}/login`, {
          method: 'POST',
          body: 'x',
          headers: { 'content-type': type },
        });
        expect(response.status, type).toBe(400);
        expect(response.headers.get('content-type')).toMatch(/^text\/html/);
      }
      const patient = await gw.seedUser({ role: 'patient' });
      const signedIn = await browser.fetch(`${loginUrl}/login`, {
        method: 'POST',
        body: new URLSearchParams({ csrf: csrfOf(login), email: patient.email, password: patient.password }),
      });
      expect(signedIn.status).toBe(303);
    });

    it('answers a login post with a field sent twice 400 (which one would count is a guess), and the form still works after', async () => {
      const { browser, loginUrl, login } = await toLogin();
      const patient = await gw.seedUser({ role: 'patient' });
      const other = await gw.seedUser({ role: 'patient' });
      const twice = new URLSearchParams({
        csrf: csrfOf(login),
        email: other.email,
        password: patient.password,
      });
      twice.append('email', patient.email);
      const response = await browser.fetch(`${loginUrl}/login`, { method: 'POST', body: twice });
      expect(response.status).toBe(400);
      expect(response.headers.get('location')).toBeNull();
      const signedIn = await browser.fetch(`${loginUrl}/login`, {
        method: 'POST',
        body: new URLSearchParams({ csrf: csrfOf(login), email: patient.email, password: patient.password }),
      });
      expect(signedIn.status).toBe(303);
    });

    it('answers a consent post that is not a urlencoded form 400, never 500 (a multipart body that does not parse)', async () => {
      const { browser, consentUrl, page } = await toConsent();
      for (const [type, body] of [
        ['multipart/form-data', 'x'],
        ['multipart/form-data; boundary=b', '--b\r\nContent-Disposition: form-data; name="csrf"\r\n\r\nx'],
        ['application/json', JSON.stringify({ csrf: csrfOf(page), decision: 'allow' })],
        ['text/plain', `csrf=${csrfOf(page)}&decision=allow`],
      ]) {
        const response = await browser.fetch(`${consentUrl}/consent`, {
          method: 'POST',
          body,
          headers: { 'content-type': type as string },
        });
        expect(response.status, type).toBe(400);
        expect(response.headers.get('content-type')).toMatch(/^text\/html/);
        expect(response.headers.get('location')).toBeNull();
      }
      // the consent is still to be given, with the right form
      const allowed = await browser.fetch(`${consentUrl}/consent`, {
        method: 'POST',
        body: new URLSearchParams({ csrf: csrfOf(page), decision: 'allow' }),
      });
      expect(allowed.status).toBe(303);
    });

    it('refuses a consent post from a browser without the interaction cookie (a cross-site post)', async () => {
      const { consentUrl, page } = await toConsent();
      const response = await new Browser().fetch(`${consentUrl}/consent`, {
        method: 'POST',
        body: new URLSearchParams({ csrf: csrfOf(page), decision: 'allow' }),
      });
      expect(response.status).toBe(400);
      expect(response.headers.get('location')).toBeNull();
    });

    it('serve strict, script-free pages', async () => {
      const { browser, consentUrl, page } = await toConsent();
      const response = await browser.fetch(consentUrl);
      const csp = response.headers.get('content-security-policy')!;
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).toMatch(/form-action 'self' http:\/\/127\.0\.0\.1:9(;|$)/);
      expect(page).not.toMatch(/<script/i);
      expect(page).toContain('Read and search Observation of your own record');
      expect(page).toMatch(/<button[^>]*value="allow"/);
      expect(response.headers.get('x-frame-options')).toBe('DENY');
    });

    it('sign in with any password signup accepts (its length counted after NFKC, as /auth/login counts it)', async () => {
      // 65 characters as typed, 82 after NFKC (U+FDFA expands to 18), 132 UTF-16 units after NFKC
      const person = await gw.seedUser({
        role: 'patient',
        password: `correct horse ${'🍎'.repeat(50)}\uFDFA`,
      });
      const { challenge } = pkcePair();
      const result = await launch(gw, person, {
        clientId: app.client_id,
        redirectUri,
        scope: SCOPE,
        challenge,
      });
      expect(result.code, result.location).toBeTruthy();
    });

    it('re-render the login form on a wrong password, audited as /auth/login failures are', async () => {
      const { browser, loginUrl, login } = await toLogin();
      const response = await browser.fetch(`${loginUrl}/login`, {
        method: 'POST',
        body: new URLSearchParams({
          csrf: csrfOf(login),
          email: patient.email,
          password: 'not the password at all',
        }),
      });
      expect(response.status).toBe(401);
      expect(await response.text()).toContain('Email or password is incorrect.');
      const audit = await gw.deps.db
        .selectFrom('audit_log')
        .selectAll()
        .where('action', '=', 'auth.login')
        .where('actor_user_id', '=', patient.id)
        .where('outcome', '=', 'failed')
        .execute();
      expect(audit.some((row) => JSON.parse(row.detail ?? '{}').client_id === app.client_id)).toBe(true);
    });
  });
});

describe.each(DIALECTS)('the SMART login form on %s', (dialect) => {
  let gw: TestGateway;
  let app: RegisteredApp;
  beforeAll(async () => {
    gw = await startSmartGateway({ dialect });
    app = await registerApp(gw, { redirect_uris: ['http://127.0.0.1:9/app/callback'] });
  });
  afterAll(() => gw.close());

  it.each([
    ['a NUL', 'ann\u0000@example.com'],
    ['no address at all', 'not an address'],
    ['two addresses', 'a@example.com, b@example.com'],
  ])('answers an email with %s like a wrong password, never a 500', async (_what, email) => {
    const { browser, loginUrl, login } = await openLogin(gw, app, SCOPE);
    const response = await browser.fetch(`${loginUrl}/login`, {
      method: 'POST',
      body: new URLSearchParams({ csrf: csrfOf(login), email, password: 'a long and plain passphrase' }),
    });
    expect(response.status).toBe(401);
    expect(await response.text()).toContain('Email or password is incorrect.');
  });
});
