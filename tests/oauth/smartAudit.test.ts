import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RATE_LIMITS } from '../../src/auth/rateLimiter.js';
import { smartRefusalOutcome } from '../../src/oauth/endpointAudit.js';
import type { TestGateway } from '../helpers/gateway.js';
import { clearOfWindowEnd } from '../helpers/rateWindows.js';
import {
  authorizeUrl,
  Browser,
  csrfOf,
  launch,
  openLogin,
  pkcePair,
  type RegisteredApp,
  registerApp,
  startSmartGateway,
  tokenRequest,
} from '../helpers/smart.js';

/**
 * oidc-provider's endpoints in the audit trail: the tokens an app got for a code, and every
 * refusal at the token, authorization and revocation endpoints — with the app and the OAuth
 * error, never a code, token, secret or verifier.
 */

describe('smartRefusalOutcome', () => {
  it.each([
    ['invalid_client', 'failed'],
    ['invalid_grant', 'failed'],
    ['invalid_request', 'denied'],
    ['unsupported_grant_type', 'denied'],
    ['unauthorized_client', 'denied'],
    ['invalid_scope', 'denied'],
    ['invalid_target', 'denied'],
  ])('%s is %s', (error, outcome) => {
    expect(smartRefusalOutcome(error)).toBe(outcome);
  });
});

const SCOPE = 'launch/patient openid fhirUser offline_access patient/Observation.rs';

describe('SMART endpoints: the audit trail', () => {
  let gw: TestGateway;
  let app: RegisteredApp;
  let confidential: RegisteredApp;
  let patient: { id: string; email: string; password: string };

  beforeAll(async () => {
    gw = await startSmartGateway();
    app = await registerApp(gw, { redirect_uris: ['http://127.0.0.1:9/app/callback'] });
    confidential = await registerApp(gw, {
      type: 'confidential',
      redirect_uris: ['https://server-app.example.com/callback'],
    });
    patient = await gw.seedUser({ role: 'patient' });
  });
  afterAll(() => gw.close());

  /** The trail's entries of one action, since `since` (each test reads only what it caused). */
  async function entriesOf(action: string, since: string) {
    await gw.deps.auditTrail.flush();
    const rows = await gw.deps.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', action)
      .where('occurred_at', '>=', since)
      .orderBy('occurred_at')
      .execute();
    return rows.map((row) => ({ ...row, detail: JSON.parse(row.detail ?? '{}') }));
  }

  async function codeFor(target = app) {
    const { verifier, challenge } = pkcePair();
    const result = await launch(gw, patient, {
      clientId: target.client_id,
      redirectUri: target.redirect_uris[0]!,
      scope: SCOPE,
      challenge,
    });
    expect(result.code, result.location).toBeTruthy();
    return { code: result.code!, verifier };
  }

  const exchange = (code: string, verifier: string, target = app, secret?: string) =>
    tokenRequest(
      gw,
      {
        grant_type: 'authorization_code',
        code,
        redirect_uri: target.redirect_uris[0]!,
        code_verifier: verifier,
      },
      { clientId: target.client_id, ...(secret ? { secret } : {}) },
    );

  // entries are stamped to the millisecond: a moment passes first, so what came before never shares it
  const now = async () => {
    await new Promise((resolve) => setTimeout(resolve, 3));
    return gw.deps.clock.now().toISOString();
  };

  it('records the tokens issued for a code: the person, the app and the granted scope, no token', async () => {
    const since = await now();
    const { code, verifier } = await codeFor();
    const answer = await exchange(code, verifier);
    expect(answer.status).toBe(200);
    const entries = await entriesOf('smart.token', since);
    expect(entries).toEqual([
      expect.objectContaining({
        outcome: 'success',
        actor_user_id: patient.id,
        actor_role: 'patient',
        request_id: expect.any(String),
        detail: {
          via: 'smart',
          client_id: app.client_id,
          grant_type: 'authorization_code',
          scope: expect.stringContaining('patient/Observation.rs'),
        },
      }),
    ]);
    const written = JSON.stringify(entries);
    for (const secret of [code, verifier, answer.body.access_token!, answer.body.refresh_token!])
      expect(written).not.toContain(secret);
  });

  it('does not record a refresh that worked (as /auth/refresh is not), only its refusals', async () => {
    const { code, verifier } = await codeFor();
    const tokens = (await exchange(code, verifier)).body;
    const since = await now();
    const refreshed = await tokenRequest(
      gw,
      { grant_type: 'refresh_token', refresh_token: tokens.refresh_token! },
      { clientId: app.client_id },
    );
    expect(refreshed.status).toBe(200);
    expect(await entriesOf('smart.token', since)).toEqual([]);
    const unknown = await tokenRequest(
      gw,
      { grant_type: 'refresh_token', refresh_token: 'not-a-refresh-token' },
      { clientId: app.client_id },
    );
    expect(unknown.body.error).toBe('invalid_grant');
    expect(await entriesOf('smart.token', since)).toEqual([
      expect.objectContaining({
        outcome: 'failed',
        error_code: 'invalid_grant',
        actor_user_id: null,
        detail: { via: 'smart', client_id: app.client_id, grant_type: 'refresh_token', status: 400 },
      }),
    ]);
  });

  it('records a wrong PKCE verifier as a failed exchange, without the verifier or the code', async () => {
    const { code } = await codeFor();
    const since = await now();
    const wrong = pkcePair().verifier;
    expect((await exchange(code, wrong)).body.error).toBe('invalid_grant');
    const entries = await entriesOf('smart.token', since);
    expect(entries).toEqual([expect.objectContaining({ outcome: 'failed', error_code: 'invalid_grant' })]);
    expect(JSON.stringify(entries)).not.toContain(wrong);
    expect(JSON.stringify(entries)).not.toContain(code);
  });

  it('records a wrong client secret as failed invalid_client, never the secret', async () => {
    const { code, verifier } = await codeFor(confidential);
    const since = await now();
    const answer = await exchange(code, verifier, confidential, 'cs_not-the-secret');
    expect(answer.status).toBe(401);
    expect(answer.body.error).toBe('invalid_client');
    const entries = await entriesOf('smart.token', since);
    // the registered app the request named: an attempt at that app, as a failed login is at an account
    expect(entries).toEqual([
      expect.objectContaining({
        outcome: 'failed',
        error_code: 'invalid_client',
        detail: {
          via: 'smart',
          client_id: confidential.client_id,
          grant_type: 'authorization_code',
          status: 401,
        },
      }),
    ]);
    expect(JSON.stringify(entries)).not.toContain('cs_not-the-secret');
  });

  it('records a malformed token request as denied', async () => {
    const since = await now();
    const answer = await tokenRequest(gw, { grant_type: 'password' }, { clientId: app.client_id });
    expect(answer.status).toBe(400);
    expect(await entriesOf('smart.token', since)).toEqual([
      expect.objectContaining({ outcome: 'denied', error_code: answer.body.error }),
    ]);
  });

  it('records a replayed code once, as smart.code_reuse, not again as a token refusal', async () => {
    const { code, verifier } = await codeFor();
    expect((await exchange(code, verifier)).status).toBe(200);
    const since = await now();
    expect((await exchange(code, verifier)).body.error).toBe('invalid_grant');
    expect(await entriesOf('smart.code_reuse', since)).toHaveLength(1);
    expect(await entriesOf('smart.token', since)).toEqual([]);
  });

  it('records a refused authorization request with the app, and a Deny only as smart.consent', async () => {
    const since = await now();
    const browser = new Browser();
    const { challenge } = pkcePair();
    const wrongAud = await browser.fetch(
      authorizeUrl(gw, {
        clientId: app.client_id,
        redirectUri: app.redirect_uris[0]!,
        scope: SCOPE,
        challenge,
        aud: 'https://elsewhere.example.com/fhir',
      }),
    );
    expect(new URL(wrongAud.headers.get('location')!).searchParams.get('error')).toBe('invalid_request');
    const denied = await launch(gw, patient, {
      clientId: app.client_id,
      redirectUri: app.redirect_uris[0]!,
      scope: SCOPE,
      challenge,
      decision: 'deny',
    });
    expect(denied.error).toBe('access_denied');
    expect(await entriesOf('smart.authorize', since)).toEqual([
      expect.objectContaining({
        outcome: 'denied',
        error_code: 'invalid_request',
        detail: { via: 'smart', client_id: app.client_id, grant_type: null, status: 400 },
      }),
    ]);
    expect(await entriesOf('smart.consent', since)).toEqual([
      expect.objectContaining({ outcome: 'denied', actor_user_id: patient.id }),
    ]);
  });

  it('names no app the request made up', async () => {
    const since = await now();
    const madeUp = 'no-such-app-<script>';
    const answer = await tokenRequest(
      gw,
      {
        grant_type: 'authorization_code',
        code: 'x',
        redirect_uri: 'http://127.0.0.1:9/x',
        code_verifier: 'y',
      },
      { clientId: madeUp },
    );
    expect(answer.body.error).toBe('invalid_client');
    const entries = await entriesOf('smart.token', since);
    expect(entries).toEqual([
      expect.objectContaining({ outcome: 'failed', detail: expect.objectContaining({ client_id: null }) }),
    ]);
    expect(JSON.stringify(entries)).not.toContain('no-such-app');
  });

  it("records a SMART login over the account's limit once, at the account, with the app and the limit", async () => {
    const person = await gw.seedUser({ role: 'patient' });
    const { browser, loginUrl, login } = await openLogin(gw, app, SCOPE);
    let page = login;
    const since = await now();
    let answer: Response | undefined;
    await clearOfWindowEnd(RATE_LIMITS.loginAccount.windowSeconds);
    for (let i = 0; i < 6; i++) {
      answer = await browser.fetch(`${loginUrl}/login`, {
        method: 'POST',
        body: new URLSearchParams({
          csrf: csrfOf(page),
          email: person.email,
          password: 'not the password at all',
        }),
      });
      page = await answer.text();
    }
    expect(answer?.status).toBe(429);
    const refused = (await entriesOf('auth.login', since)).filter((e) => e.outcome === 'denied');
    expect(refused).toEqual([
      expect.objectContaining({
        error_code: 'rate_limited',
        actor_user_id: person.id,
        detail: { via: 'smart', client_id: app.client_id, limit: 'login.account', status: 429 },
      }),
    ]);
  });

  it('records a revocation by an app that failed to authenticate', async () => {
    const since = await now();
    const response = await fetch(`${gw.url}/oauth/revoke`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${confidential.client_id}:wrong`).toString('base64')}`,
      },
      body: new URLSearchParams({ token: 'whatever' }),
    });
    expect(response.status).toBe(401);
    expect(await entriesOf('smart.revoke', since)).toEqual([
      expect.objectContaining({ outcome: 'failed', error_code: 'invalid_client' }),
    ]);
  });
});
