import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';

describe.each(DIALECTS)('POST /auth/login (%s)', (dialect) => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ dialect });
  });
  afterAll(() => gw.close());

  const attempt = (email: string, password: string) =>
    gw.call('/auth/login', { method: 'POST', json: { email, password } });

  it('logs the first admin in and returns a token that verifies against the JWKS', async () => {
    const response = await attempt(ADMIN_EMAIL.toUpperCase(), ADMIN_PASSWORD);
    expect(response.status).toBe(200);
    const body = (await response.json()) as Record<string, unknown> & {
      token: string;
      user: Record<string, unknown>;
    };
    expect(body.token_type).toBe('Bearer');
    expect(body.expires_in).toBe(900);
    expect(body.user).toEqual({
      id: expect.any(String),
      email: ADMIN_EMAIL,
      role: 'admin',
      fhir_id: null,
      is_registered: true,
      profile: {},
    });
    expect(decodeProtectedHeader(body.token)).toMatchObject({
      alg: 'ES256',
      typ: 'at+jwt',
      kid: expect.any(String),
    });
    const jwks = (await (await gw.call('/.well-known/jwks.json')).json()) as { keys: never[] };
    const { payload } = await jwtVerify(body.token, createLocalJWKSet(jwks), {
      issuer: 'http://gateway.test',
      audience: 'fhir-facade',
    });
    expect(payload).toMatchObject({ sub: body.user.id, role: 'admin', fhir_id: null, scope: 'user/*.cruds' });
    expect(payload.exp! - payload.iat!).toBe(900);
    expect(typeof payload.jti).toBe('string');
  });

  it('puts the FHIR id and fhirUser of a patient in the token', async () => {
    const patient = await gw.seedUser({ role: 'patient', fhirId: 'pat-123' });
    const token = await gw.login(patient.email, patient.password);
    const me = (await (await gw.call('/auth/me', { token })).json()) as { user: Record<string, unknown> };
    expect(me.user).toMatchObject({ role: 'patient', fhir_id: 'pat-123', is_registered: true });
    const [, payload] = token.split('.');
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString()) as Record<string, unknown>;
    expect(claims).toMatchObject({ fhir_id: 'pat-123', fhirUser: 'Patient/pat-123', scope: 'patient/*.rs' });
  });

  it('answers wrong password, unknown email, pending and deactivated accounts with byte-identical 401 bodies', async () => {
    const pending = await gw.seedUser({ role: 'patient', registered: false });
    const deactivated = await gw.seedUser({ role: 'practitioner', active: false });
    const answers = await Promise.all([
      attempt(ADMIN_EMAIL, 'the wrong password entirely'),
      attempt('nobody-here@example.com', ADMIN_PASSWORD),
      attempt(pending.email, pending.password),
      attempt(deactivated.email, deactivated.password),
    ]);
    const bodies = await Promise.all(answers.map((r) => r.text()));
    expect(answers.map((r) => r.status)).toEqual([401, 401, 401, 401]);
    expect(new Set(bodies).size).toBe(1);
    expect(JSON.parse(bodies[0]!)).toEqual({
      type: 'about:blank',
      title: 'Unauthorized',
      status: 401,
      code: 'invalid_credentials',
      detail: 'Email or password is incorrect.',
    });
    expect(answers[0]!.headers.get('content-type')).toBe('application/problem+json');
  });

  it('refuses a password over 128 characters before hashing it', async () => {
    const started = performance.now();
    const response = await attempt(ADMIN_EMAIL, 'x'.repeat(10_000));
    expect(response.status).toBe(400);
    expect(((await response.json()) as { code: string }).code).toBe('validation_failed');
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it('rejects unknown fields, a non-JSON body and malformed JSON with clear 4xx', async () => {
    const extra = await gw.call('/auth/login', {
      method: 'POST',
      json: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD, role: 'admin' },
    });
    expect(extra.status).toBe(400);
    expect(await extra.json()).toMatchObject({ code: 'validation_failed', errors: [{ path: 'role' }] });
    const form = await gw.call('/auth/login', {
      method: 'POST',
      body: 'email=a',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(form.status).toBe(415);
    const malformed = await gw.call('/auth/login', {
      method: 'POST',
      body: '{"email":',
      headers: { 'content-type': 'application/json' },
    });
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as { code: string }).code).toBe('invalid_json');
  });

  it('audits successful and failed logins without the password', async () => {
    await attempt(ADMIN_EMAIL, 'not the admin password at all');
    const rows = await gw.deps.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'auth.login')
      .execute();
    expect(rows.some((r) => r.outcome === 'success')).toBe(true);
    expect(rows.some((r) => r.outcome === 'failed' && r.detail?.includes('wrong_password'))).toBe(true);
    expect(JSON.stringify(rows)).not.toContain('not the admin password');
  });
});
