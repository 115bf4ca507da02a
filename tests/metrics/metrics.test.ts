import { AggregatorRegistry, Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RATE_LIMITS } from '../../src/auth/rateLimiter.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { uuidv7 } from '../../src/ids.js';
import { RequestTable, registerComputed } from '../../src/metrics/latency.js';
import { DISABLED_METRICS } from '../../src/metrics/metrics.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { clearOfWindowEnd } from '../helpers/rateWindows.js';
import { authorizeUrl, Browser, csrfOf, pkcePair, registerApp, startSmartGateway } from '../helpers/smart.js';

/**
 * GET /metrics (docs/operations.md, "Metrics"): off by default, behind METRICS_TOKEN when on,
 * Prometheus text with bounded labels (route patterns, never paths or ids), and the figures the
 * operator alerts on: requests and latency, upstream latency and errors, refused logins, rate
 * limits, outbox backlog and failures, active sessions.
 */

const TOKEN = 'metrics-token-0123456789abcdef0123456789abcdef';

/** The value of one sample line, e.g. `fhir_facade_outbox_backlog{lane="email"}`; undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Every line is a comment or `name{labels} value` with a number, and every family has one HELP and one TYPE. */
function expectValidExposition(text: string): void {
  const sampleLine =
    /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? -?[0-9.e+-]+$|NaN$|\+Inf$/;
  const bad = text.split('\n').filter((l) => l !== '' && !l.startsWith('# ') && !sampleLine.test(l));
  expect(bad).toEqual([]);
  const types = [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]);
  expect(new Set(types).size).toBe(types.length);
}

describe('/metrics when METRICS_TOKEN is unset', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(() => gw.close());

  it('answers 404 and records nothing', async () => {
    expect(gw.deps.metrics).toBe(DISABLED_METRICS);
    expect((await gw.call('/metrics')).status).toBe(404);
    expect((await gw.call('/metrics', { token: TOKEN })).status).toBe(404);
  });
});

describe('/metrics with METRICS_TOKEN', () => {
  let gw: TestGateway;
  let patient: { id: string; email: string; password: string };
  const fhirId = `pat-${uuidv7().slice(-12)}`;
  const scrape = async () => {
    const response = await gw.call('/metrics', { token: TOKEN });
    expect(response.status).toBe(200);
    return response.text();
  };

  beforeAll(async () => {
    gw = await startTestGateway({ env: { METRICS_TOKEN: TOKEN } });
    patient = await gw.seedUser({ role: 'patient', fhirId });
  });
  afterAll(() => gw.close());

  it('refuses a scrape without the token or with a wrong one (401, a Bearer challenge)', async () => {
    for (const token of [undefined, 'wrong', `${TOKEN}x`, TOKEN.slice(0, -1), await gw.adminToken()]) {
      const response = await gw.call('/metrics', token ? { token } : {});
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toBe('Bearer realm="metrics"');
    }
    const basic = await gw.call('/metrics', { headers: { authorization: `Basic ${TOKEN}` } });
    expect(basic.status).toBe(401);
  });

  it('serves the Prometheus text format, with process metrics and zeroed counters from the first scrape', async () => {
    const response = await gw.call('/metrics', { token: TOKEN });
    expect(response.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(response.headers.get('cache-control')).toBe('no-store');
    const text = await response.text();
    expectValidExposition(text);
    expect(text).toContain('# TYPE process_cpu_user_seconds_total counter');
    expect(sample(text, 'fhir_facade_outbox_failures_total{lane="email",outcome="failed"}')).toBe(0);
    expect(sample(text, 'fhir_facade_login_failures_total{route="/auth/login"}')).toBe(0);
  });

  it('counts requests by method, route pattern and status, with latency histograms', async () => {
    const token = await gw.login(patient.email, patient.password);
    for (let i = 0; i < 3; i++) expect((await gw.call('/auth/me', { token })).status).toBe(200);
    expect((await gw.call('/auth/me')).status).toBe(401);
    expect((await gw.call(`/fhir/Patient/${fhirId}`, { token })).status).toBeLessThan(500);
    const text = await scrape();
    expectValidExposition(text);
    expect(sample(text, 'fhir_facade_http_requests_total{method="GET",route="/auth/me",status="200"}')).toBe(
      3,
    );
    expect(sample(text, 'fhir_facade_http_requests_total{method="GET",route="/auth/me",status="401"}')).toBe(
      1,
    );
    const me = 'fhir_facade_http_request_duration_seconds';
    expect(sample(text, `${me}_count{method="GET",route="/auth/me"}`)).toBe(4);
    expect(sample(text, `${me}_bucket{method="GET",route="/auth/me",le="+Inf"}`)).toBe(4);
    expect(sample(text, `${me}_bucket{method="GET",route="/auth/me",le="10"}`)).toBe(4);
    expect(sample(text, `${me}_sum{method="GET",route="/auth/me"}`)).toBeGreaterThan(0);
    // the FHIR read is counted under its route pattern, and the upstream exchange it made too
    expect(text).toMatch(
      /fhir_facade_http_requests_total\{method="GET",route="\/fhir\/[^"]*\*[^"]*",status="\d{3}"\} 1/,
    );
    expect(sample(text, 'fhir_facade_upstream_request_duration_seconds_count{method="GET"}')).toBeGreaterThan(
      0,
    );
  });

  it('labels a request with the route that answered it, not the passthrough pattern also matched behind it', async () => {
    const admin = await gw.adminToken();
    const created = await gw.call('/fhir/patient', {
      method: 'POST',
      token: admin,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        name: { given: ['Mia'], family: 'Label' },
        email: 'mia.label@example.com',
        dob: '1990-01-02',
      }),
    });
    expect(created.status).toBe(201);
    expect((await gw.call('/fhir/.well-known/smart-configuration')).status).toBe(200);
    const text = await scrape();
    expect(
      sample(text, 'fhir_facade_http_requests_total{method="POST",route="/fhir/patient",status="201"}'),
    ).toBe(1);
    expect(text).toMatch(/route="\/fhir\/\.well-known\/smart-configuration",status="200"\} 1/);
    expect(text).not.toMatch(/method="POST",route="\/fhir\/\*"/);
  });

  it('never puts a user id, an email, a patient id or a token in a label', async () => {
    const token = await gw.login(patient.email, patient.password);
    await gw.call(`/fhir/Observation?subject=Patient/${fhirId}`, { token });
    await gw.call(`/admin/users/${patient.id}`, { token: await gw.adminToken() });
    await gw.call(`/no/such/path/${fhirId}`);
    const text = await scrape();
    for (const secret of [patient.id, patient.email, fhirId, token, TOKEN])
      expect(text).not.toContain(secret);
    expect(text).toContain('route="/admin/users/:id"');
  });

  it('counts refused logins and rate-limited requests by route pattern', async () => {
    const before = await scrape();
    const failures = (t: string) => sample(t, 'fhir_facade_login_failures_total{route="/auth/login"}') ?? 0;
    const limited = (t: string) => sample(t, 'fhir_facade_rate_limited_total{route="/auth/login"}') ?? 0;
    const email = `nobody-${uuidv7().slice(-8)}@example.com`;
    // 5 failures per account per 5 minutes; the sixth attempt is refused by the limit
    await clearOfWindowEnd(RATE_LIMITS.loginAccount.windowSeconds);
    for (let i = 0; i < 6; i++) {
      await gw.call('/auth/login', { method: 'POST', json: { email, password: 'not the password' } });
    }
    const after = await scrape();
    expect(failures(after) - failures(before)).toBe(5);
    expect(limited(after) - limited(before)).toBe(1);
    expect(after).not.toContain(email);
  });

  it('counts upstream errors by status', async () => {
    const admin = await gw.adminToken();
    const missing = await gw.call('/fhir/Patient/no-such-patient-here', { token: admin });
    expect(missing.status).toBe(404);
    expect(sample(await scrape(), 'fhir_facade_upstream_errors_total{status="404"}')).toBeGreaterThanOrEqual(
      1,
    );
  });

  it('reads the outbox backlog per lane and counts failed deliveries', async () => {
    const insert = (kind: 'email' | 'fhir_audit_event', payload: string, due: Date) =>
      gw.deps.db
        .insertInto('outbox')
        .values({
          id: uuidv7(),
          kind,
          payload,
          next_attempt_at: due.toISOString(),
          locked_until: null,
          last_error: null,
          created_at: new Date(Date.now() - 60_000).toISOString(),
          sent_at: null,
        })
        .execute();
    const later = new Date(Date.now() + 3_600_000);
    await insert('email', '{}', later);
    await insert('fhir_audit_event', '{}', later);
    await insert('fhir_audit_event', '{}', later);
    let text = await scrape();
    expect(sample(text, 'fhir_facade_outbox_backlog{lane="email"}')).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'fhir_facade_outbox_backlog{lane="fhir_audit_event"}')).toBeGreaterThanOrEqual(2);
    expect(sample(text, 'fhir_facade_outbox_oldest_pending_seconds{lane="email"}')).toBeGreaterThanOrEqual(
      59,
    );

    // a row no retry can deliver (not JSON) is given up at once
    const failed = () =>
      sample(text, 'fhir_facade_outbox_failures_total{lane="email",outcome="failed"}') ?? 0;
    const before = failed();
    await insert('email', 'not json', new Date());
    gw.deps.outbox.wake();
    for (let i = 0; i < 50 && failed() === before; i++) {
      await new Promise((r) => setTimeout(r, 100));
      text = await scrape();
    }
    expect(failed()).toBe(before + 1);
  });

  it('reports active sessions read from the database at scrape time', async () => {
    const active = async () => sample(await scrape(), 'fhir_facade_active_sessions{kind="gateway"}') ?? 0;
    const user = await gw.seedUser({ role: 'practitioner' });
    const before = await active();
    const token = await gw.login(user.email, user.password);
    expect(await active()).toBe(before + 1);
    expect((await gw.call('/auth/logout', { method: 'POST', token })).status).toBe(204);
    expect(await active()).toBe(before);
    expect(sample(await scrape(), 'fhir_facade_active_sessions{kind="smart"}')).toBe(0);
  });
});

describe('/metrics and the SMART login page', () => {
  let gw: TestGateway;
  afterAll(() => gw?.close());

  it('counts a refused login on the SMART login page under its route pattern', async () => {
    gw = await startSmartGateway({ env: { METRICS_TOKEN: TOKEN } });
    const app = await registerApp(gw, { redirect_uris: ['http://127.0.0.1:9/app/callback'] });
    const patient = await gw.seedUser({ role: 'patient', fhirId: 'pat-smart-metrics' });
    const browser = new Browser();
    const { challenge } = pkcePair();
    const start = await browser.fetch(
      authorizeUrl(gw, {
        clientId: app.client_id,
        redirectUri: 'http://127.0.0.1:9/app/callback',
        scope: 'launch/patient patient/Observation.rs',
        challenge,
      }),
    );
    const loginUrl = new URL(start.headers.get('location')!, gw.url).href;
    const page = await (await browser.fetch(loginUrl)).text();
    const response = await browser.fetch(`${loginUrl}/login`, {
      method: 'POST',
      body: new URLSearchParams({ csrf: csrfOf(page), email: patient.email, password: 'not the password' }),
    });
    expect(response.status).toBe(401);
    const text = await (await gw.call('/metrics', { token: TOKEN })).text();
    expect(sample(text, 'fhir_facade_login_failures_total{route="/oauth/*"}')).toBe(1);
    expect(sample(text, 'fhir_facade_http_requests_total{method="POST",route="/oauth/*",status="401"}')).toBe(
      1,
    );
  });
});

/** A registry exposing one request table as a counter and a histogram, as src/metrics/metrics.ts does. */
function tableRegistry(table: RequestTable, counter: string, histogram: string): Registry {
  const registry = new Registry();
  registerComputed(registry, { name: counter, help: 'h', type: 'counter', values: () => table.counts() });
  registerComputed(registry, {
    name: histogram,
    help: 'h',
    type: 'histogram',
    values: () => table.histogram(histogram),
  });
  return registry;
}

describe('the request table', () => {
  it('keeps cumulative buckets, sums in seconds, and escapes label values', async () => {
    const table = new RequestTable();
    table.record('GET', '/a', 200, 0.5);
    table.record('GET', '/a', 200, 7);
    table.record('GET', '/a', 500, 20_000);
    table.record('BREW', '/a "quoted"\\', 418, 1);
    const text = await tableRegistry(table, 't_requests_total', 't_duration_seconds').metrics();
    expect(sample(text, 't_requests_total{method="GET",route="/a",status="200"}')).toBe(2);
    expect(sample(text, 't_requests_total{method="GET",route="/a",status="500"}')).toBe(1);
    expect(sample(text, 't_duration_seconds_bucket{method="GET",route="/a",le="0.001"}')).toBe(1);
    expect(sample(text, 't_duration_seconds_bucket{method="GET",route="/a",le="0.01"}')).toBe(2);
    expect(sample(text, 't_duration_seconds_bucket{method="GET",route="/a",le="10"}')).toBe(2);
    expect(sample(text, 't_duration_seconds_bucket{method="GET",route="/a",le="+Inf"}')).toBe(3);
    expect(sample(text, 't_duration_seconds_sum{method="GET",route="/a"}')).toBeCloseTo(20.0075, 6);
    expect(text).toContain('t_requests_total{method="other",route="/a \\"quoted\\"\\\\",status="418"} 1');
    expectValidExposition(text);
  });

  it('adds up the workers of a cluster as prom-client aggregates them', async () => {
    const workers = [new RequestTable(), new RequestTable()];
    workers[0]!.record('GET', '/a', 200, 3);
    workers[1]!.record('GET', '/a', 200, 30);
    const json = await Promise.all(
      workers.map((table) => tableRegistry(table, 'w_total', 'w_seconds').getMetricsAsJSON()),
    );
    const text = await AggregatorRegistry.aggregate(json).metrics();
    expect(sample(text, 'w_total{method="GET",route="/a",status="200"}')).toBe(2);
    expect(sample(text, 'w_seconds_bucket{method="GET",route="/a",le="0.005"}')).toBe(1);
    expect(sample(text, 'w_seconds_bucket{method="GET",route="/a",le="0.05"}')).toBe(2);
    expect(sample(text, 'w_seconds_count{method="GET",route="/a"}')).toBe(2);
  });
});

describe('METRICS_TOKEN', () => {
  it('must be 32+ printable characters without spaces', () => {
    expect(() => loadConfig({ METRICS_TOKEN: 'short' })).toThrow(ConfigError);
    expect(() => loadConfig({ METRICS_TOKEN: `${'a'.repeat(32)} b` })).toThrow(/METRICS_TOKEN/);
    expect(loadConfig({ METRICS_TOKEN: TOKEN }).metrics.token).toBe(TOKEN);
    expect(loadConfig({}).metrics.token).toBeUndefined();
  });
});
