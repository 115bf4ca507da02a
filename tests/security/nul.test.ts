import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestGateway } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';
import { startSmartGateway } from '../helpers/smart.js';

/**
 * A NUL character in a filter, an id, a cursor or an OAuth client_id is a clear 400 (401 where
 * OAuth says so), never our 500: PostgreSQL cannot compare text holding NUL, SQLite can, so the
 * same request once answered differently per database.
 */

const cursorOf = (value: string) => Buffer.from(JSON.stringify({ before: value })).toString('base64url');
const VERIFIER = 'a'.repeat(43);

describe.each(DIALECTS)('a NUL character in the request (%s)', (dialect) => {
  let gw: TestGateway;
  let admin: string;

  beforeAll(async () => {
    gw = await startSmartGateway({ dialect });
    admin = await gw.adminToken();
  });
  afterAll(() => gw?.close());

  it.each([
    ['GET', '/admin/users?email=%00'],
    ['GET', '/admin/users/%00'],
    ['POST', '/admin/users/abc%00/access-code'],
    ['GET', '/admin/audit?action=%00'],
    ['GET', '/admin/audit?actor_user_id=%00'],
    ['GET', '/admin/audit?error_code=a%00'],
    ['GET', '/admin/smart-apps/%00'],
    ['GET', '/patient/observations?code=%00'],
    ['GET', '/fhir/Observation?code=%00'],
  ])("an admin's %s %s is a 400", async (method, path) => {
    const response = await gw.call(path, { method, token: admin });
    expect(response.status, await response.text()).toBe(400);
  });

  it.each(['/admin/audit', '/admin/users'])('a cursor holding NUL on %s is a 400', async (path) => {
    const response = await gw.call(`${path}?cursor=${cursorOf('\u0000')}`, { token: admin });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { errors: { path: string }[] }).errors[0]?.path).toBe('cursor');
  });

  it('an anonymous authorize request with a NUL client_id is a 400', async () => {
    const query = new URLSearchParams({
      client_id: '\u0000',
      response_type: 'code',
      redirect_uri: 'https://app.example/cb',
      scope: 'openid',
      code_challenge: VERIFIER,
      code_challenge_method: 'S256',
      state: '1',
    });
    const response = await gw.call(`/oauth/authorize?${query}`, { redirect: 'manual' });
    expect(response.status).toBe(400);
  });

  it('an anonymous token request with a NUL client_id in its form body is refused as an unknown client', async () => {
    const body = new URLSearchParams({
      grant_type: 'authorization_code',
      code: 'x',
      client_id: '\u0000',
      redirect_uri: 'https://app.example/cb',
      code_verifier: VERIFIER,
    });
    const response = await gw.call('/oauth/token', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: body.toString(),
    });
    expect(response.status).toBe(401);
    expect(((await response.json()) as { error: string }).error).toBe('invalid_client');
  });
});
