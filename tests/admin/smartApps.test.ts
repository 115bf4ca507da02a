import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

/** /admin/smart-apps: registration rules, the secret shown once and stored hashed, every call audited. */

const VALID = {
  name: 'Clinic Portal',
  type: 'confidential',
  redirect_uris: ['https://portal.example.com/smart/callback'],
  scopes: ['openid', 'fhirUser', 'user/*.rs'],
};

describe('/admin/smart-apps', () => {
  let gw: TestGateway;
  let admin: string;

  beforeAll(async () => {
    gw = await startTestGateway();
    admin = await gw.adminToken();
  });
  afterAll(() => gw.close());

  const register = (json: unknown) => gw.call('/admin/smart-apps', { method: 'POST', token: admin, json });

  it('shows a confidential app its secret once and keeps only its hash', async () => {
    const response = await register(VALID);
    expect(response.status).toBe(201);
    const app = (await response.json()) as { client_id: string; client_secret: string };
    expect(app.client_secret).toMatch(/^cs_[A-Za-z0-9_-]{43}$/);
    const read = await gw.call(`/admin/smart-apps/${app.client_id}`, { token: admin });
    expect(JSON.stringify(await read.json())).not.toContain('client_secret');
    const listed = await gw.call('/admin/smart-apps', { token: admin });
    expect(JSON.stringify(await listed.json())).not.toContain(app.client_secret);
    const row = await gw.deps.db
      .selectFrom('smart_apps')
      .selectAll()
      .where('client_id', '=', app.client_id)
      .executeTakeFirstOrThrow();
    expect(row.secret_hash).not.toContain(app.client_secret);
    expect(row.secret_hash).toHaveLength(64);
  });

  it('gives a public app no secret', async () => {
    const response = await register({
      ...VALID,
      type: 'public',
      redirect_uris: ['http://localhost:8080/index.html'],
    });
    expect(response.status).toBe(201);
    const app = (await response.json()) as Record<string, unknown>;
    expect(app.client_secret).toBeUndefined();
    const row = await gw.deps.db
      .selectFrom('smart_apps')
      .selectAll()
      .where('client_id', '=', String(app.client_id))
      .executeTakeFirstOrThrow();
    expect(row.secret_hash).toBeNull();
  });

  it.each([
    [
      'a plain-http redirect URI off loopback',
      { redirect_uris: ['http://portal.example.com/cb'] },
      'redirect_uris.0',
    ],
    [
      'a redirect URI with a fragment',
      { redirect_uris: ['https://portal.example.com/cb#x'] },
      'redirect_uris.0',
    ],
    ['a relative redirect URI', { redirect_uris: ['/cb'] }, 'redirect_uris.0'],
    [
      'a redirect URI with a NUL',
      { redirect_uris: ['https://portal.example.com/cb\u0000'] },
      'redirect_uris.0',
    ],
    ['a redirect URI with a tab', { redirect_uris: ['https://portal.example.com/c\tb'] }, 'redirect_uris.0'],
    [
      'a redirect URI with a line break',
      { redirect_uris: ['https://portal.example.com/cb\n'] },
      'redirect_uris.0',
    ],
    ['a redirect URI with a space', { redirect_uris: ['https://portal.example.com/c b'] }, 'redirect_uris.0'],
    [
      'a redirect URI with a C1 control',
      { redirect_uris: ['https://portal.example.com/cb\u0085'] },
      'redirect_uris.0',
    ],
    [
      'a redirect URI with credentials',
      { redirect_uris: ['https://u:p@portal.example.com/cb'] },
      'redirect_uris.0',
    ],
    ['no redirect URI', { redirect_uris: [] }, 'redirect_uris'],
    // matched as stored, but the browser is sent to the URL parser's form of it: the two must be one
    ['a redirect URI with an empty host', { redirect_uris: ['https:///cb'] }, 'redirect_uris.0'],
    ['a wildcard host', { redirect_uris: ['https://*.example.com/cb'] }, 'redirect_uris.0'],
    ['a backslash', { redirect_uris: ['https://app.example.com\\@evil.com/'] }, 'redirect_uris.0'],
    ['a broken percent-encoding', { redirect_uris: ['https://app.example.com/cb?a=%ZZ'] }, 'redirect_uris.0'],
    ['a host not in its ASCII form', { redirect_uris: ['https://bücher.example/cb'] }, 'redirect_uris.0'],
    ['a loopback spelled otherwise', { redirect_uris: ['http://127.1/cb'] }, 'redirect_uris.0'],
    ['a host in capitals', { redirect_uris: ['http://LOCALHOST/cb'] }, 'redirect_uris.0'],
    ['an origin without its path', { redirect_uris: ['https://app.example.com'] }, 'redirect_uris.0'],
    ['an unknown scope', { scopes: ['patient/*.rs', 'launch'] }, 'scopes.1'],
    ['a granular scope', { scopes: ['patient/Observation.rs?category=laboratory'] }, 'scopes.0'],
    ['a system scope (no backend services)', { scopes: ['openid', 'system/*.cruds'] }, 'scopes.1'],
    ['a scope twice', { scopes: ['openid', 'openid'] }, 'scopes'],
    ['a scope twice in two spellings', { scopes: ['patient/*.read', 'patient/*.rs'] }, 'scopes'],
    ['a type R4 does not have', { scopes: ['user/Foo.rs'] }, 'scopes.0'],
    [
      'a redirect URI twice',
      { redirect_uris: ['https://portal.example.com/cb', 'https://portal.example.com/cb'] },
      'redirect_uris',
    ],
    ['a name that renders reversed', { name: '\u202elatroP' }, 'name'],
    ['an unknown type', { type: 'native' }, 'type'],
    ['an extra field', { client_secret: 'chosen' }, 'client_secret'],
  ])('refuses %s', async (_label, change, path) => {
    const response = await register({ ...VALID, ...change });
    expect(response.status).toBe(400);
    const problem = (await response.json()) as { code: string; errors: Array<{ path: string }> };
    expect(problem.code).toBe('validation_failed');
    expect(problem.errors.map((e) => e.path)).toContain(path);
  });

  it('changes an app, answers 404 for an unknown one, and audits every call', async () => {
    const app = (await (await register(VALID)).json()) as { client_id: string };
    const patch = await gw.call(`/admin/smart-apps/${app.client_id}`, {
      method: 'PATCH',
      token: admin,
      json: { name: 'Clinic Portal 2', active: false },
    });
    expect(patch.status).toBe(200);
    expect(await patch.json()).toMatchObject({ name: 'Clinic Portal 2', active: false });
    const missing = await gw.call('/admin/smart-apps/no-such-app', { token: admin });
    expect(missing.status).toBe(404);
    const actions = (
      await gw.deps.db
        .selectFrom('audit_log')
        .select(['action', 'detail'])
        .where('action', 'like', 'smart_apps.%')
        .execute()
    ).map((r) => r.action);
    expect(actions).toEqual(
      expect.arrayContaining([
        'smart_apps.create',
        'smart_apps.update',
        'smart_apps.read',
        'smart_apps.list',
      ]),
    );
  });
});
