import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestGateway } from '../helpers/gateway.js';
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
 * A SMART app's tokens end exactly like the gateway's own: on the very next /fhir request after
 * the user is deactivated, the app is deactivated, or the session is logged out — and its refresh
 * token stops with them.
 */

const SCOPE = 'launch/patient openid fhirUser offline_access patient/*.rs';

describe('SMART tokens are revoked at once', () => {
  let gw: TestGateway;
  let app: RegisteredApp;

  beforeAll(async () => {
    gw = await startSmartGateway();
    app = await registerApp(gw);
  });
  afterAll(() => gw.close());

  const refresh = (token: string, target = app) =>
    tokenRequest(gw, { grant_type: 'refresh_token', refresh_token: token }, { clientId: target.client_id });

  async function launchAs() {
    const user = await gw.seedUser({ role: 'patient' });
    const tokens = await smartTokens(gw, app, user, SCOPE);
    expect((await gw.call('/fhir/Observation', { token: tokens.access_token! })).status).toBe(200);
    return { user, tokens };
  }

  it.each([
    ['the user changes their password', 'password'],
    ['an admin deactivates and reactivates the user', 'deactivation'],
  ] as const)('refuses a consent given after %s on the page the old login opened', async (_what, change) => {
    const user = await gw.seedUser({ role: 'patient' });
    const redirectUri = app.redirect_uris[0]!;
    const result = await launch(gw, user, {
      clientId: app.client_id,
      redirectUri,
      scope: SCOPE,
      challenge: pkcePair().challenge,
      beforeConsent: async () => {
        if (change === 'password') {
          const token = await gw.login(user.email, user.password);
          const changed = await gw.call('/auth/password/change', {
            method: 'POST',
            token,
            json: { current_password: user.password, new_password: 'a brand new passphrase here' },
          });
          expect(changed.status).toBe(200);
          return;
        }
        const admin = await gw.adminToken();
        for (const active of [false, true]) {
          const patch = await gw.call(`/admin/users/${user.id}`, {
            method: 'PATCH',
            token: admin,
            json: { active },
          });
          expect(patch.status).toBe(200);
        }
      },
    });
    expect(result.code).toBeNull();
    expect(result.page?.status).toBe(400);
    const sessions = await gw.deps.db
      .selectFrom('sessions')
      .select('id')
      .where('user_id', '=', user.id)
      .where('client_id', '=', app.client_id)
      .execute();
    expect(sessions).toEqual([]);
  });

  it('when an admin deactivates the user', async () => {
    const { user, tokens } = await launchAs();
    const patch = await gw.call(`/admin/users/${user.id}`, {
      method: 'PATCH',
      token: await gw.adminToken(),
      json: { active: false },
    });
    expect(patch.status).toBe(200);
    expect((await gw.call('/fhir/Observation', { token: tokens.access_token! })).status).toBe(401);
    expect((await refresh(tokens.refresh_token!)).body.error).toBe('invalid_grant');
  });

  it('when an admin deactivates the app (every user of it)', async () => {
    const own = await registerApp(gw);
    const a = await gw.seedUser({ role: 'patient' });
    const b = await gw.seedUser({ role: 'patient' });
    const tokensA = await smartTokens(gw, own, a, SCOPE);
    const tokensB = await smartTokens(gw, own, b, SCOPE);
    const other = await launchAs();
    const patch = await gw.call(`/admin/smart-apps/${own.client_id}`, {
      method: 'PATCH',
      token: await gw.adminToken(),
      json: { active: false },
    });
    expect(patch.status).toBe(200);
    for (const tokens of [tokensA, tokensB]) {
      expect((await gw.call('/fhir/Observation', { token: tokens.access_token! })).status).toBe(401);
      expect((await refresh(tokens.refresh_token!, own)).status).toBe(401);
    }
    // another app's tokens are untouched
    expect((await gw.call('/fhir/Observation', { token: other.tokens.access_token! })).status).toBe(200);
    await gw.deps.auditTrail.flush();
    const refusals = await gw.deps.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'access.denied')
      .where('actor_user_id', '=', a.id)
      .execute();
    expect(refusals.map((r) => JSON.parse(r.detail ?? '{}').reason)).toContain('revoked_session');
  });

  it("when an admin changes the app's scopes, and not when the same scopes are saved in another order", async () => {
    const own = await registerApp(gw);
    const user = await gw.seedUser({ role: 'patient' });
    const tokens = await smartTokens(gw, own, user, SCOPE);
    const change = async (scopes: string[]) =>
      gw.call(`/admin/smart-apps/${own.client_id}`, {
        method: 'PATCH',
        token: await gw.adminToken(),
        json: { scopes },
      });
    expect((await change([...own.scopes].reverse())).status).toBe(200);
    expect((await gw.call('/fhir/Observation', { token: tokens.access_token! })).status).toBe(200);
    const rotated = await refresh(tokens.refresh_token!, own);
    expect(rotated.status).toBe(200);
    expect((await change(own.scopes.filter((scope) => scope !== 'user/*.cruds'))).status).toBe(200);
    expect((await gw.call('/fhir/Observation', { token: rotated.body.access_token! })).status).toBe(401);
    expect((await refresh(rotated.body.refresh_token!, own)).body.error).toBe('invalid_grant');
  });

  it('when the app logs out with its token (POST /auth/logout)', async () => {
    const { tokens } = await launchAs();
    const logout = await gw.call('/auth/logout', { method: 'POST', token: tokens.access_token! });
    expect(logout.status).toBe(204);
    expect((await gw.call('/fhir/Observation', { token: tokens.access_token! })).status).toBe(401);
    expect((await refresh(tokens.refresh_token!)).body.error).toBe('invalid_grant');
  });

  it("when the user resets their password (token_version), and not by the user's other sessions' logout", async () => {
    const { user, tokens } = await launchAs();
    // logging out of a /auth/login session ends that session only
    const own = await gw.login(user.email, user.password);
    expect((await gw.call('/auth/logout', { method: 'POST', token: own })).status).toBe(204);
    expect((await gw.call('/fhir/Observation', { token: tokens.access_token! })).status).toBe(200);
    await gw.deps.db.updateTable('users').set({ token_version: 1 }).where('id', '=', user.id).execute();
    expect((await gw.call('/fhir/Observation', { token: tokens.access_token! })).status).toBe(401);
  });
});
