import http from 'node:http';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRow } from '../../db/schema.js';
import { type EmbeddedFhirServer, startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';
import { type FakeUpstream, startFakeUpstream } from '../helpers/fakeUpstream.js';
import { ADMIN_PASSWORD, type CallInit, tempDir } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';
import {
  type Account,
  type AuditedGateway,
  createAccount,
  requestIdOf,
  signUp,
  startAuditedGateway,
} from './auditedGateway.js';

/**
 * Every kind of refusal leaves exactly one audit entry (outcome and error code, the actor when
 * known) and a request log line naming the user and the error code — and neither holds a
 * password, an access code, a token, a query value or the upstream's diagnostics
 * (ASVS 7.1–7.2, HIPAA 164.312(b); issue 10 item 3).
 */

const PASSWORD = 'a long and plain passphrase';
const WRONG_PASSWORD = 'not-the-password-9d2c';
const WRONG_CODE = 'ZZZZ-ZZZZ-ZZZZ-ZZZZ';
const QUERY_SECRET = 'query-value-5e1b';
const HAS_SECRET = 'has-value-77aa';
const UPSTREAM_SECRET = 'upstream-diagnostics-3f9e';
/** The FHIR server refuses to create a Patient with this family name. */
const REFUSED_NAME = 'Upstream Refusesme';

/** A loopback proxy to the real FHIR server that refuses (422) the creation of one Patient. */
function refusingProxy(fhirBaseUrl: string): Promise<FakeUpstream> {
  const target = new URL(fhirBaseUrl);
  return startFakeUpstream((req, res) => {
    if (req.method === 'POST' && req.body.includes('Refusesme')) {
      const outcome = {
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'business-rule', diagnostics: UPSTREAM_SECRET }],
      };
      res.writeHead(422, { 'content-type': 'application/fhir+json' }).end(JSON.stringify(outcome));
      return;
    }
    const upstream = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: target.host },
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.writeHead(502).end());
    upstream.end(req.body);
  });
}

describe.each(DIALECTS)('refusals in the audit trail and the request log (%s)', (dialect) => {
  let fhir: EmbeddedFhirServer;
  let proxy: FakeUpstream;
  let smtp: SmtpCapture;
  let gw: AuditedGateway;
  let admin: string;
  let adminId: string;
  let practitioner: Account;
  let alice: Account;
  let bob: Account;
  let tokenAlice: string;
  let tokenDoc: string;
  let bobObservation: string;
  /** Everything that must never be written to the audit or the log. */
  const secrets: string[] = [
    PASSWORD,
    WRONG_PASSWORD,
    WRONG_CODE,
    QUERY_SECRET,
    HAS_SECRET,
    UPSTREAM_SECRET,
    ADMIN_PASSWORD,
  ];

  beforeAll(async () => {
    fhir = await startEmbeddedFhirServer({ dataDir: tempDir() });
    proxy = await refusingProxy(fhir.baseUrl);
    smtp = await startSmtpCapture();
    gw = await startAuditedGateway({
      dialect,
      env: { SMTP_URL: smtp.url, FHIR_BASE_URL: `${proxy.url}${new URL(fhir.baseUrl).pathname}` },
    });
    admin = await gw.adminToken();
    secrets.push(admin);
    adminId = (JSON.parse(Buffer.from(admin.split('.')[1]!, 'base64url').toString()) as { sub: string }).sub;
    practitioner = await createAccount(gw, smtp, 'practitioner', {
      name: 'Dr Refusal',
      email: `dr-${dialect}@example.com`,
    });
    alice = await createAccount(gw, smtp, 'patient', {
      name: 'Alice Refusal',
      email: `alice-${dialect}@example.com`,
      dob: '1980-01-01',
      general_practitioner_id: practitioner.fhirId,
    });
    bob = await createAccount(gw, smtp, 'patient', {
      name: 'Bob Other',
      email: `bob-${dialect}@example.com`,
      dob: '1981-01-01',
    });
    secrets.push(practitioner.code, alice.code, bob.code);
    tokenAlice = await signUp(gw, alice, PASSWORD);
    tokenDoc = await signUp(gw, practitioner, PASSWORD);
    secrets.push(tokenAlice, tokenDoc);
    const created = await gw.call('/fhir/Observation', {
      method: 'POST',
      token: admin,
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'Heart rate' },
        subject: { reference: `Patient/${bob.fhirId}` },
      }),
    });
    bobObservation = ((await created.json()) as { id: string }).id;
  });

  afterAll(async () => {
    await gw?.close();
    await proxy?.close();
    await fhir?.close();
    await smtp?.close();
  });

  /** Sends a request that must be refused; returns its audit rows and its log line (which names the code). */
  async function refused(path: string, init: CallInit, status: number, code: string) {
    const response = await gw.call(path, init);
    expect(response.status).toBe(status);
    const body = (await response.json()) as { code?: string; resourceType?: string };
    // problem details carry the code; an OperationOutcome names it in the log line only when it lists fields
    if (body.resourceType !== 'OperationOutcome') expect(body.code).toBe(code);
    const requestId = requestIdOf(response);
    const rows = await gw.auditOf(requestId);
    const line = gw.logOf(requestId);
    expect(line, 'request log line').toMatchObject({ code, status });
    return { rows, line: line!, requestId };
  }

  const only = (rows: AuditRow[]) => {
    expect(rows, 'exactly one audit entry for the request').toHaveLength(1);
    return rows[0]!;
  };
  const detailOf = (row: AuditRow) => JSON.parse(row.detail ?? '{}') as Record<string, unknown>;

  it('records a failed login (failed, invalid_credentials) once', async () => {
    const { rows, line } = await refused(
      '/auth/login',
      { method: 'POST', json: { email: alice.email, password: WRONG_PASSWORD } },
      401,
      'invalid_credentials',
    );
    expect(only(rows)).toMatchObject({
      action: 'auth.login',
      outcome: 'failed',
      error_code: 'invalid_credentials',
      actor_user_id: alice.userId,
    });
    expect(line).toMatchObject({ status: 401, code: 'invalid_credentials' });
  });

  it('records every refused refresh: an unknown token (denied) and a rotated one presented again (reuse), once each', async () => {
    const unknown = await refused(
      '/auth/refresh',
      { method: 'POST', json: { refresh_token: 'rt_not-a-real-refresh-token-0000000000' } },
      401,
      'invalid_refresh_token',
    );
    expect(only(unknown.rows)).toMatchObject({
      action: 'auth.refresh',
      outcome: 'denied',
      error_code: 'invalid_refresh_token',
    });
    const login = await gw.call('/auth/login', {
      method: 'POST',
      json: { email: alice.email, password: PASSWORD },
    });
    const { refresh_token } = (await login.json()) as { refresh_token: string };
    secrets.push(refresh_token);
    const rotated = await gw.call('/auth/refresh', { method: 'POST', json: { refresh_token } });
    expect(rotated.status).toBe(200);
    secrets.push(((await rotated.json()) as { refresh_token: string }).refresh_token);
    const reused = await refused(
      '/auth/refresh',
      { method: 'POST', json: { refresh_token } },
      401,
      'invalid_refresh_token',
    );
    expect(only(reused.rows)).toMatchObject({ action: 'auth.refresh_reuse', actor_user_id: alice.userId });
  });

  it('records refused password resets and code mails: a wrong code (failed), a refused body and the rate limit (denied)', async () => {
    const wrongCode = await refused(
      '/auth/password/reset',
      { method: 'POST', json: { email: alice.email, code: WRONG_CODE, new_password: `${PASSWORD} anew` } },
      400,
      'invalid_access_code',
    );
    expect(only(wrongCode.rows)).toMatchObject({
      action: 'auth.password_reset',
      outcome: 'failed',
      error_code: 'invalid_access_code',
      target_user_id: alice.userId,
    });
    const weak = await refused(
      '/auth/password/reset',
      { method: 'POST', json: { email: alice.email, code: WRONG_CODE, new_password: 'short' } },
      400,
      'validation_failed',
    );
    expect(only(weak.rows)).toMatchObject({ action: 'auth.password_reset', outcome: 'denied' });
    for (const path of ['/auth/password/forgot', '/auth/access-code/resend']) {
      const bad = await refused(
        path,
        { method: 'POST', json: { email: 'not an email' } },
        400,
        'validation_failed',
      );
      expect(only(bad.rows)).toMatchObject({ outcome: 'denied', error_code: 'validation_failed' });
    }
    let limited: Response | undefined;
    for (let i = 0; i < 30 && limited?.status !== 429; i++)
      limited = await gw.call('/auth/password/forgot', {
        method: 'POST',
        json: { email: 'nobody@example.com' },
      });
    expect(limited?.status).toBe(429);
    expect(only(await gw.auditOf(requestIdOf(limited!)))).toMatchObject({
      action: 'auth.password_forgot',
      outcome: 'denied',
      error_code: 'rate_limited',
    });
  });

  it('records requests to admin routes or methods that do not exist, with or without a token', async () => {
    for (const [path, init, status, code] of [
      ['/admin/secret-export', {}, 404, 'not_found'],
      ['/admin/users', { method: 'DELETE', token: admin }, 405, 'method_not_allowed'],
      [
        '/admin/users',
        { method: 'POST', token: tokenDoc, json: { role: 'admin' } },
        405,
        'method_not_allowed',
      ],
    ] as const) {
      const probe = await refused(path, init, status, code);
      expect(only(probe.rows)).toMatchObject({ action: 'api.request', outcome: 'denied', error_code: code });
    }
  });

  it("names the token's holder when a request was refused before authentication ran (413, 415, 404, 405)", async () => {
    const holder = (token: string) =>
      (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { sub: string }).sub;
    for (const [path, init, status, code, actor, role, action = 'api.request'] of [
      ['/admin/secret-export', { token: admin }, 404, 'not_found', adminId, 'admin'],
      ['/admin/users', { method: 'DELETE', token: admin }, 405, 'method_not_allowed', adminId, 'admin'],
      [
        '/admin/users',
        { method: 'POST', token: tokenDoc, json: { role: 'admin' } },
        405,
        'method_not_allowed',
        holder(tokenDoc),
        'practitioner',
      ],
      [
        '/fhir/patient',
        { method: 'POST', token: admin, headers: { 'content-type': 'text/plain' }, body: 'name=x' },
        415,
        'unsupported_media_type',
        adminId,
        'admin',
        'provisioning.create',
      ],
      [
        '/fhir/patient',
        { method: 'POST', token: admin, json: { name: 'x'.repeat(2 * 1024 * 1024) } },
        413,
        'payload_too_large',
        adminId,
        'admin',
        'provisioning.create',
      ],
      // a signed-in user's refused request anywhere is theirs, not only at admin routes
      ['/no-such-route', { token: tokenAlice }, 404, 'not_found', holder(tokenAlice), 'patient'],
    ] as const) {
      const probe = await refused(path, init as CallInit, status, code);
      expect(only(probe.rows), `${init.method ?? 'GET'} ${path}`).toMatchObject({
        action,
        outcome: 'denied',
        error_code: code,
        actor_user_id: actor,
        actor_role: role,
      });
    }
    // a token that does not verify names no one: at an admin route the refusal is recorded without an actor
    const forged = `${admin.slice(0, admin.lastIndexOf('.'))}.${'A'.repeat(86)}`;
    const probe = await refused('/admin/secret-export', { token: forged }, 404, 'not_found');
    expect(only(probe.rows)).toMatchObject({ action: 'api.request', actor_user_id: null, actor_role: null });
    // elsewhere, as before, an unknown route with a forged token is not an audit event
    const stray = await refused('/no-such-route', { token: forged }, 404, 'not_found');
    expect(stray.rows).toEqual([]);
    // a refused login names the account it tried (none here), never the bearer of another token
    const login = await refused(
      '/auth/login',
      { method: 'POST', token: tokenAlice, json: { email: 'not-an-email' } },
      400,
      'validation_failed',
    );
    expect(only(login.rows)).toMatchObject({ action: 'auth.login', actor_user_id: null });
  });

  it('records failed signups: a wrong code (failed) and a refused password (denied), once each', async () => {
    const wrongCode = await refused(
      '/auth/signup',
      { method: 'POST', json: { email: bob.email, access_code: WRONG_CODE, password: PASSWORD } },
      400,
      'invalid_access_code',
    );
    expect(only(wrongCode.rows)).toMatchObject({
      action: 'auth.signup',
      outcome: 'failed',
      error_code: 'invalid_access_code',
    });
    expect(wrongCode.line).toMatchObject({ code: 'invalid_access_code' });
    const weak = await refused(
      '/auth/signup',
      { method: 'POST', json: { email: bob.email, access_code: bob.code, password: 'short' } },
      400,
      'validation_failed',
    );
    expect(only(weak.rows)).toMatchObject({
      action: 'auth.signup',
      outcome: 'denied',
      error_code: 'validation_failed',
    });
  });

  it('records token failures with their reason: missing, invalid, expired (with the user), revoked session', async () => {
    const missing = await refused('/patient/profile', {}, 401, 'unauthenticated');
    expect(only(missing.rows)).toMatchObject({
      action: 'access.denied',
      outcome: 'denied',
      error_code: 'unauthenticated',
      actor_user_id: null,
    });
    expect(detailOf(missing.rows[0]!)).toMatchObject({ reason: 'missing', route: '/patient/profile' });

    const garbage = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl';
    secrets.push(garbage);
    const invalid = await refused('/fhir/Observation', { token: garbage }, 401, 'unauthenticated');
    expect(detailOf(only(invalid.rows))).toMatchObject({ reason: 'invalid' });

    const claims = JSON.parse(Buffer.from(tokenAlice.split('.')[1]!, 'base64url').toString()) as Record<
      string,
      unknown
    >;
    const now = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({ ...claims, iat: now - 7200, exp: now - 3600 })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: gw.deps.signingKey.kid })
      .sign(gw.deps.signingKey.privateKey);
    secrets.push(expired);
    const old = await refused('/fhir/Observation', { token: expired }, 401, 'unauthenticated');
    expect(only(old.rows)).toMatchObject({ actor_user_id: alice.userId, error_code: 'unauthenticated' });
    expect(detailOf(old.rows[0]!)).toMatchObject({ reason: 'expired' });
    expect(old.line).toMatchObject({ user_id: alice.userId, code: 'unauthenticated' });

    const session = await gw.login(alice.email, PASSWORD);
    secrets.push(session);
    expect((await gw.call('/auth/logout', { method: 'POST', token: session })).status).toBe(204);
    const revoked = await refused('/patient/profile', { token: session }, 401, 'unauthenticated');
    expect(only(revoked.rows)).toMatchObject({ actor_user_id: alice.userId, actor_role: 'patient' });
    expect(detailOf(revoked.rows[0]!)).toMatchObject({ reason: 'revoked_session' });
    expect(revoked.line).toMatchObject({ user_id: alice.userId });
  });

  it('records a role denial once (access.denied, forbidden), with the user in the log', async () => {
    const { rows, line } = await refused('/admin/users', { token: tokenAlice }, 403, 'forbidden');
    expect(only(rows)).toMatchObject({
      action: 'access.denied',
      outcome: 'denied',
      error_code: 'forbidden',
      actor_user_id: alice.userId,
      actor_role: 'patient',
    });
    expect(line).toMatchObject({ user_id: alice.userId, code: 'forbidden', status: 403 });
  });

  it("records an admin's create without an email (400) once", async () => {
    const { rows, line } = await refused(
      '/fhir/patient',
      { method: 'POST', token: admin, json: { name: 'No Mail', dob: '1990-01-01' } },
      400,
      'validation_failed',
    );
    expect(only(rows)).toMatchObject({
      action: 'provisioning.create',
      outcome: 'denied',
      error_code: 'validation_failed',
      actor_user_id: adminId,
      actor_role: 'admin',
      target_fhir_type: 'Patient',
    });
    // the route that refused it, not the passthrough's catch-all that matched the path too
    expect(detailOf(only(rows))).toMatchObject({ method: 'POST', route: '/fhir/patient' });
    expect(line).toMatchObject({ user_id: adminId, code: 'validation_failed' });
  });

  it("records an admin's create of a taken email (409) once, as denied: nothing was created", async () => {
    const { rows } = await refused(
      '/fhir/patient',
      { method: 'POST', token: admin, json: { name: 'Same Mail', email: alice.email, dob: '1990-01-01' } },
      409,
      'conflict',
    );
    expect(only(rows)).toMatchObject({
      action: 'provisioning.create',
      outcome: 'denied',
      error_code: 'conflict',
      actor_user_id: adminId,
    });
  });

  it("records an admin's create the FHIR server refused once, as failed", async () => {
    const response = await gw.call('/fhir/patient', {
      method: 'POST',
      token: admin,
      json: { name: REFUSED_NAME, email: `refused-${dialect}@example.com`, dob: '1990-01-01' },
    });
    expect(response.status).toBeGreaterThanOrEqual(400);
    const { code } = (await response.json()) as { code: string };
    const requestId = requestIdOf(response);
    const row = only(await gw.auditOf(requestId));
    expect(row).toMatchObject({
      action: 'provisioning.create',
      outcome: 'failed',
      error_code: code,
      actor_user_id: adminId,
    });
    expect(gw.logOf(requestId)).toMatchObject({ user_id: adminId, code });
  });

  it('records a passthrough refusal of a forbidden type (403) once, without the query', async () => {
    const { rows, line } = await refused(
      `/fhir/Questionnaire?name=${QUERY_SECRET}`,
      { token: tokenAlice },
      403,
      'forbidden',
    );
    expect(only(rows)).toMatchObject({
      action: 'fhir.search',
      outcome: 'denied',
      error_code: 'forbidden',
      actor_user_id: alice.userId,
      target_fhir_type: 'Questionnaire',
    });
    expect(line).toMatchObject({ user_id: alice.userId, code: 'forbidden', route: '/fhir/*' });
  });

  it('records a refused search (_has, 400) once, without the query', async () => {
    const { rows, line } = await refused(
      `/fhir/Patient?_has:Observation:patient:code=${HAS_SECRET}`,
      { token: tokenAlice },
      400,
      'validation_failed',
    );
    expect(only(rows)).toMatchObject({
      action: 'fhir.search',
      outcome: 'denied',
      error_code: 'validation_failed',
      target_fhir_type: 'Patient',
    });
    expect(line).toMatchObject({ user_id: alice.userId, code: 'validation_failed' });
  });

  it('records an out-of-scope read (404) once as denied, out_of_scope, naming the other patient', async () => {
    const byPatient = await refused(`/fhir/Patient/${bob.fhirId}`, { token: tokenAlice }, 404, 'not_found');
    expect(only(byPatient.rows)).toMatchObject({
      action: 'fhir.read',
      outcome: 'denied',
      error_code: 'out_of_scope',
      actor_user_id: alice.userId,
      target_fhir_type: 'Patient',
      target_fhir_id: bob.fhirId,
      patient_id: bob.fhirId,
    });
    expect(byPatient.line).toMatchObject({ user_id: alice.userId, code: 'not_found' });
    const byDoctor = await refused(
      `/fhir/Observation/${bobObservation}`,
      { token: tokenDoc },
      404,
      'not_found',
    );
    expect(only(byDoctor.rows)).toMatchObject({
      error_code: 'out_of_scope',
      actor_user_id: practitioner.userId,
      actor_role: 'practitioner',
      target_fhir_id: bobObservation,
      patient_id: bob.fhirId,
    });
  });

  it('lists the refusals at GET /admin/audit?outcome=denied and ?outcome=failed', async () => {
    await gw.settle();
    const page = async (query: string) => {
      const response = await gw.call(`/admin/audit?${query}&limit=200`, { token: admin });
      expect(response.status).toBe(200);
      return (
        (await response.json()) as {
          entries: { outcome: string; action: string; error_code: string | null }[];
        }
      ).entries;
    };
    const denied = await page('outcome=denied');
    expect(denied.every((e) => e.outcome === 'denied')).toBe(true);
    expect(new Set(denied.map((e) => e.error_code))).toEqual(
      new Set([
        'forbidden',
        'unauthenticated',
        'validation_failed',
        'out_of_scope',
        'invalid_refresh_token',
        'rate_limited',
        'not_found',
        'method_not_allowed',
        'conflict',
        'unsupported_media_type',
        'payload_too_large',
      ]),
    );
    const failed = await page('outcome=failed');
    expect(failed.every((e) => e.outcome === 'failed')).toBe(true);
    expect(failed.map((e) => e.action)).toEqual(
      expect.arrayContaining(['auth.login', 'auth.signup', 'provisioning.create']),
    );
    const outOfScope = await page('error_code=out_of_scope');
    expect(outOfScope).toHaveLength(2);
  });

  it('keeps passwords, codes, tokens, query values and upstream diagnostics out of the audit and the log', async () => {
    await gw.settle();
    const audit = JSON.stringify(await gw.deps.db.selectFrom('audit_log').selectAll().execute());
    const log = gw.logText();
    for (const secret of secrets) {
      expect(audit, 'audit').not.toContain(secret);
      expect(log, 'log').not.toContain(secret);
    }
    // the code as typed without hyphens, too
    for (const code of [alice.code, bob.code, WRONG_CODE])
      expect(audit + log).not.toContain(code.replaceAll('-', ''));
  });
});
