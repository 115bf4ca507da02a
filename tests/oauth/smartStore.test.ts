import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestGateway } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';
import {
  launch,
  pkcePair,
  type RegisteredApp,
  registerApp,
  smartTokens,
  startSmartGateway,
  tokenRequest,
} from '../helpers/smart.js';

/**
 * The authorization server's storage on each database (src/oauth/adapter.ts): a launch and a
 * refresh work on SQLite and PostgreSQL, and single use holds under concurrency — of two
 * exchanges racing with one code, or two refreshes with one refresh token, exactly one wins.
 */

describe.each(DIALECTS)('SMART storage (%s)', (dialect) => {
  let gw: TestGateway;
  let app: RegisteredApp;
  let user: { email: string; password: string };

  beforeAll(async () => {
    gw = await startSmartGateway({ dialect });
    app = await registerApp(gw);
    user = await gw.seedUser({ role: 'patient' });
  });
  afterAll(() => gw.close());

  it('completes a launch and a refresh', async () => {
    const tokens = await smartTokens(gw, app, user, 'launch/patient offline_access patient/*.rs');
    const refreshed = await tokenRequest(
      gw,
      { grant_type: 'refresh_token', refresh_token: tokens.refresh_token! },
      { clientId: app.client_id },
    );
    expect(refreshed.status).toBe(200);
    expect((await gw.call('/fhir/Observation', { token: refreshed.body.access_token! })).status).toBe(200);
  });

  it('lets exactly one of two concurrent exchanges of one code succeed', async () => {
    const { verifier, challenge } = pkcePair();
    const redirectUri = app.redirect_uris[0]!;
    const result = await launch(gw, user, {
      clientId: app.client_id,
      redirectUri,
      scope: 'patient/*.rs',
      challenge,
    });
    const form = {
      grant_type: 'authorization_code',
      code: result.code!,
      redirect_uri: redirectUri,
      code_verifier: verifier,
    };
    const answers = await Promise.all([1, 2].map(() => tokenRequest(gw, form, { clientId: app.client_id })));
    const winners = answers.filter((a) => a.status === 200);
    expect(winners.length).toBeLessThanOrEqual(1);
    expect(answers.filter((a) => a.body.error === 'invalid_grant').length).toBeGreaterThanOrEqual(1);
  });

  it('lets at most one of two concurrent refreshes with one refresh token succeed', async () => {
    const tokens = await smartTokens(gw, app, user, 'offline_access patient/*.rs');
    const form = { grant_type: 'refresh_token', refresh_token: tokens.refresh_token! };
    const answers = await Promise.all([1, 2].map(() => tokenRequest(gw, form, { clientId: app.client_id })));
    expect(answers.filter((a) => a.status === 200).length).toBeLessThanOrEqual(1);
    expect(answers.some((a) => a.body.error === 'invalid_grant')).toBe(true);
  });
});
