import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';
import { createLogger } from '../../src/logger.js';
import { startGateway } from '../../src/server.js';
import { startHoldingProxy, unusedPort } from '../helpers/fakeUpstream.js';
import {
  ADMIN_EMAIL,
  ADMIN_PASSWORD,
  httpCaller,
  startTestGateway,
  type TestGateway,
  tempDir,
} from '../helpers/gateway.js';
import { waitFor } from '../helpers/processes.js';

/** A JSON POST sent in 16 KiB chunks with no Content-Length (Transfer-Encoding: chunked). */
function chunkedPost(url: string, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json' } });
    request.on('response', (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        text += chunk;
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }));
    });
    // the server may answer 413 and close before the last chunk: the answer is what counts
    request.on('error', (error) => (request.writableFinished ? undefined : reject(error)));
    for (let i = 0; i < body.length; i += 16 * 1024) request.write(body.slice(i, i + 16 * 1024));
    request.end();
  });
}

describe('HTTP basics', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ env: { CORS_ORIGINS: 'https://app.example.com' } });
  });
  afterAll(() => gw.close());

  it('answers /healthz and /readyz when the database and the FHIR server are up', async () => {
    expect(await (await gw.call('/healthz')).json()).toEqual({ status: 'ok' });
    const ready = await gw.call('/readyz');
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', checks: { database: 'ok', fhir: 'ok' } });
  });

  it('echoes a well-formed X-Request-Id and invents one otherwise', async () => {
    const echoed = await gw.call('/healthz', { headers: { 'x-request-id': 'client-req-12345' } });
    expect(echoed.headers.get('x-request-id')).toBe('client-req-12345');
    const replaced = await gw.call('/healthz', { headers: { 'x-request-id': 'bad id\twith spaces' } });
    expect(replaced.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    // an id of the gateway's own form (a UUIDv7, as in the audit) is never taken from a client:
    // another request could otherwise file its entries under an admin action's id
    const ours = (await gw.call('/healthz')).headers.get('x-request-id') ?? '';
    for (const claimed of [ours, ours.toUpperCase()]) {
      const answer = await gw.call('/healthz', { headers: { 'x-request-id': claimed } });
      expect(answer.headers.get('x-request-id')).not.toBe(claimed);
      expect(answer.headers.get('x-request-id')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/);
    }
    const v4 = '4b1c9a8e-2f3d-4e5a-9b6c-7d8e9f0a1b2c';
    expect((await gw.call('/healthz', { headers: { 'x-request-id': v4 } })).headers.get('x-request-id')).toBe(
      v4,
    );
  });

  it('sets no-store and nosniff and reveals no server or framework', async () => {
    const response = await gw.call('/auth/me');
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(response.headers.get('x-powered-by')).toBeNull();
    expect(response.headers.get('server')).toBeNull();
  });

  // the headers are set on the Node response before the route (src/middleware/responseHeaders.ts): every kind of answer carries them
  it.each([
    ['a FHIR answer relayed from upstream', '/fhir/Patient', true, 200, 'no-store'],
    ['a FHIR refusal', '/fhir/Patient', false, 401, 'no-store'],
    ['a FHIR body refused for its size', '/fhir/Patient/x', true, 413, 'no-store', 'PUT'],
    ['a slim JSON answer', '/auth/me', true, 200, 'no-store'],
    ['a slim refusal', '/auth/login', false, 401, 'no-store', 'POST'],
    // (and its own CORS: public keys are read from any origin)
    ['a route with its own cache policy', '/.well-known/jwks.json', false, 200, 'public, max-age=300'],
    ['an unknown route', '/nope', false, 404, 'no-store'],
  ])(
    'gives %s the request id, security and CORS headers',
    async (_, path, signedIn, status, cache, method = 'GET') => {
      const body =
        method === 'PUT'
          ? { headers: { 'content-type': 'application/fhir+json' }, body: 'x'.repeat(5 * 1024 * 1024 + 1) }
          : method === 'POST'
            ? { json: { email: 'nobody@example.com', password: 'not the password' } }
            : {};
      const response = await gw.call(path, {
        method,
        ...body,
        headers: {
          origin: 'https://app.example.com',
          'x-request-id': 'client-req-67890',
          ...('headers' in body ? body.headers : {}),
        },
        ...(signedIn ? { token: await gw.adminToken() } : {}),
      });
      expect(response.status).toBe(status);
      expect(response.headers.get('x-request-id')).toBe('client-req-67890');
      expect(response.headers.get('cache-control')).toBe(cache);
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(response.headers.get('x-frame-options')).toBe('DENY');
      expect(response.headers.get('referrer-policy')).toBe('no-referrer');
      expect(response.headers.get('access-control-allow-origin')).toBe(
        path === '/.well-known/jwks.json' ? '*' : 'https://app.example.com',
      );
      expect(response.headers.get('access-control-expose-headers')).toContain('ETag');
      expect(response.headers.get('vary')).toContain('Origin');
      expect(Number(response.headers.get('content-length'))).toBe((await response.arrayBuffer()).byteLength);
    },
  );

  // a route's own header wins over the gateway's default for the same name (set before the route)
  it('keeps the SMART discovery document open to any origin, with the security headers', async () => {
    const response = await gw.call('/fhir/.well-known/smart-configuration', {
      headers: { origin: 'https://app.example.com' },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('access-control-allow-origin')).toBe('*');
    expect(response.headers.get('x-frame-options')).toBe('DENY');
    expect(response.headers.get('x-request-id')).toBeTruthy();
  });

  // without a Node response (app.request(), as in unit tests) the same headers are set after the route
  it('sets the same headers on an answer served without a Node server', async () => {
    const { createApp } = await import('../../src/app.js');
    const app = createApp(gw.deps);
    const response = await app.request('/nope', {
      headers: { origin: 'https://app.example.com', 'x-request-id': 'client-req-24680' },
    });
    expect(response.status).toBe(404);
    expect(Object.fromEntries(response.headers)).toMatchObject({
      'x-request-id': 'client-req-24680',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
      'access-control-allow-origin': 'https://app.example.com',
      vary: 'Origin',
    });
  });

  it('gives a disallowed origin no CORS headers on an answer', async () => {
    const response = await gw.call('/healthz', { headers: { origin: 'https://evil.example' } });
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('allows CORS only for listed origins', async () => {
    const preflight = (origin: string) =>
      gw.call('/auth/login', {
        method: 'OPTIONS',
        headers: {
          origin,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'content-type',
        },
      });
    const allowed = await preflight('https://app.example.com');
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example.com');
    const refused = await preflight('https://evil.example');
    expect(refused.status).toBe(204);
    expect([...refused.headers.keys()].filter((name) => name.startsWith('access-control-'))).toEqual([]);
  });

  it('lets the allowed origin read the 400 a malformed query gets, and its preflight pass (review S3)', async () => {
    const origin = 'https://app.example.com';
    const bad = await gw.call('/healthz?a=%FF', { headers: { origin } });
    expect(bad.status).toBe(400);
    expect(bad.headers.get('access-control-allow-origin')).toBe(origin);
    expect(bad.headers.get('access-control-expose-headers')).toContain('X-Request-Id');
    const preflight = await gw.call('/auth/me?a=%FF', {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'GET' },
    });
    expect(preflight.headers.get('access-control-allow-origin')).toBe(origin);
  });

  it('answers unknown routes with a problem+json 404', async () => {
    const response = await gw.call('/nope');
    expect(response.status).toBe(404);
    expect(response.headers.get('content-type')).toBe('application/problem+json');
    expect(await response.json()).toMatchObject({ code: 'not_found', status: 404 });
  });

  it.each([
    ['GET', '/auth/login', 'POST'],
    ['PUT', '/auth/login', 'POST'],
    ['DELETE', '/admin/users', 'GET'],
    ['POST', '/admin/users/019a6b40-2b3c-7d4e-9f50-6a7b8c9d0e1f', 'GET, PATCH'],
    ['DELETE', '/patient/observations', 'GET'],
  ])(
    'answers %s %s, a path known under other methods, with 405 and Allow: %s',
    async (method, path, allow) => {
      const response = await gw.call(path, { method });
      expect(response.status).toBe(405);
      expect(response.headers.get('allow')).toBe(allow);
      expect(await response.json()).toMatchObject({ code: 'method_not_allowed', status: 405 });
    },
  );

  it('refuses a slim request body over 64 KiB with 413', async () => {
    const response = await gw.call('/auth/login', {
      method: 'POST',
      json: { email: 'a@example.com', password: 'x'.repeat(70 * 1024) },
    });
    expect(response.status).toBe(413);
    expect(await response.json()).toMatchObject({ code: 'payload_too_large' });
  });

  // the seed's slim create endpoints live under /fhir but speak the slim JSON API: its limit and media type
  it.each(['/fhir/patient', '/fhir/practitioner'])(
    'holds slim %s to the 64 KiB limit and JSON',
    async (path) => {
      const token = await gw.adminToken();
      const large = await gw.call(path, {
        method: 'POST',
        token,
        json: { email: 'large@example.com', name: 'x'.repeat(70 * 1024) },
      });
      expect(large.status).toBe(413);
      expect(await large.json()).toMatchObject({ code: 'payload_too_large' });
      const form = await gw.call(path, {
        method: 'POST',
        token,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'email=form%40example.com&name=Form+Post',
      });
      expect(form.status).toBe(415);
      expect(await form.json()).toMatchObject({ code: 'unsupported_media_type' });
      const stored = gw.deps.db.selectFrom('users').select('id').where('email', '=', 'form@example.com');
      expect(await stored.executeTakeFirst()).toBeUndefined();
    },
  );

  // a body of declared length is judged by its header; a chunked one is counted as it arrives
  it.each([
    ['over 64 KiB', 70 * 1024, 413],
    ['under the limit', 0, 401],
  ])('judges a chunked slim body %s (%s bytes of padding)', async (_, padding, status) => {
    const body = JSON.stringify({ email: 'a@example.com', password: `wrong ${'x'.repeat(padding)}` });
    const answer = await chunkedPost(`${gw.url}/auth/login`, body);
    expect(answer.status).toBe(status);
    expect(JSON.parse(answer.body)).toMatchObject({
      code: status === 413 ? 'payload_too_large' : 'invalid_credentials',
    });
  });

  // the passthrough reads the body of every method but GET and HEAD (an OPTIONS is CORS's, unread)
  it.each(['DELETE', 'PATCH', 'PUT'])('refuses a FHIR %s body over 5 MiB with 413', async (method) => {
    const response = await gw.call('/fhir/Patient/x', {
      method,
      token: await gw.adminToken(),
      headers: { 'content-type': 'application/fhir+json' },
      body: 'x'.repeat(5 * 1024 * 1024 + 1),
    });
    expect(response.status).toBe(413);
    expect(await response.json()).toMatchObject({
      resourceType: 'OperationOutcome',
      issue: [{ code: 'too-costly' }],
    });
  });

  it('logs each request once without its query string', async () => {
    const lines: string[] = [];
    const { createLogger } = await import('../../src/logger.js');
    const logger = createLogger('info', { write: (line: string) => lines.push(line) } as never);
    const { createApp } = await import('../../src/app.js');
    const app = createApp({ ...gw.deps, logger });
    await app.request('/healthz?access_code=SECRET-CODE');
    expect(lines).toHaveLength(1);
    const entry = JSON.parse(lines[0]!);
    expect(entry).toMatchObject({ method: 'GET', route: '/healthz', status: 200 });
    expect(typeof entry.req_id).toBe('string');
    expect(typeof entry.duration_ms).toBe('number');
    expect(lines[0]).not.toContain('SECRET-CODE');
  });
});

describe('readiness with the FHIR server down', () => {
  it('answers 503 naming the FHIR check, quickly', async () => {
    const { unusedPort } = await import('../helpers/fakeUpstream.js');
    const port = await unusedPort();
    const gw = await startTestGateway({ env: { FHIR_BASE_URL: `http://127.0.0.1:${port}/fhir` } });
    try {
      const response = await gw.call('/readyz');
      expect(response.status).toBe(503);
      expect(await response.json()).toEqual({
        status: 'unavailable',
        checks: { database: 'ok', fhir: 'failed' },
      });
    } finally {
      await gw.close();
    }
  });

  it('answers 503 naming the workers while other serving processes of a cluster still start', async () => {
    let peersReady = false;
    const gw = await startTestGateway({ peersReady: () => peersReady });
    try {
      const starting = await gw.call('/readyz');
      expect(starting.status).toBe(503);
      expect(await starting.json()).toEqual({
        status: 'unavailable',
        checks: { database: 'ok', fhir: 'ok', workers: 'starting' },
      });
      peersReady = true;
      expect((await gw.call('/readyz')).status).toBe(200);
    } finally {
      await gw.close();
    }
  });

  it('answers 503 within the readiness timeout when the FHIR server hangs', async () => {
    const { startFakeUpstream } = await import('../helpers/fakeUpstream.js');
    const hang = await startFakeUpstream(() => {});
    const gw = await startTestGateway({ env: { FHIR_BASE_URL: `${hang.url}/fhir` } });
    try {
      const started = Date.now();
      const response = await gw.call('/readyz');
      expect(response.status).toBe(503);
      expect(Date.now() - started).toBeLessThan(3_500);
    } finally {
      await gw.close();
      await hang.close();
    }
  });
});

describe('a client that closes the connection halfway through its body', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(() => gw.close());

  it('is its own failure on /fhir (a 400, denied), never a 500 of ours', async () => {
    const token = await gw.adminToken();
    const { hostname, port } = new URL(gw.url);
    const socket = net.connect(Number(port), hostname);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(
      [
        'POST /fhir/Observation HTTP/1.1',
        `Host: ${hostname}:${port}`,
        `Authorization: Bearer ${token}`,
        'Content-Type: application/fhir+json',
        'Content-Length: 500',
        'X-Request-Id: client-gone-halfway',
        '',
        '{"resourceType":',
      ].join('\r\n'),
    );
    await new Promise((r) => setTimeout(r, 200));
    socket.destroy();
    const rows = await waitFor('the refusal to be audited', async () => {
      const found = await gw.deps.db
        .selectFrom('audit_log')
        .select(['outcome', 'error_code'])
        .where('request_id', '=', 'client-gone-halfway')
        .execute();
      return found.length > 0 ? found : undefined;
    });
    expect(rows).toEqual([{ outcome: 'denied', error_code: 'invalid_json' }]);
  });
});

describe('the log level of a failed request', () => {
  it('is a warning when a dependency failed (502), so an alert on errors does not page for an outage; /readyz logs why', async () => {
    const lines: string[] = [];
    const config = loadConfig({
      PORT: '0',
      DATA_DIR: tempDir(),
      ADMIN_EMAIL,
      ADMIN_PASSWORD,
      PUBLIC_BASE_URL: 'http://gateway.test',
      FHIR_BASE_URL: `http://127.0.0.1:${await unusedPort()}/fhir`,
    });
    const gateway = await startGateway(config, {
      logger: createLogger('info', { write: (line: string) => void lines.push(line) }),
    });
    try {
      const call = httpCaller(gateway.url);
      const login = await call('/auth/login', {
        method: 'POST',
        json: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD },
      });
      const { token } = (await login.json()) as { token: string };
      const response = await call('/fhir/Observation', { token });
      expect(response.status).toBe(502);
      const logged = lines.map((l) => JSON.parse(l) as { level: number; msg: string });
      expect(logged.filter((l) => l.msg.startsWith('request failed'))).toEqual([
        expect.objectContaining({ level: 40, msg: 'request failed: a dependency' }),
      ]);
      // a probe's 503 says why in the log (a code, not a message)
      expect((await call('/readyz')).status).toBe(503);
      const probe = lines
        .map((l) => JSON.parse(l) as { msg: string })
        .filter((l) => l.msg === 'readiness check failed');
      expect(probe).toEqual([
        expect.objectContaining({ level: 40, check: 'fhir', reason: 'upstream_unavailable' }),
      ]);
    } finally {
      await gateway.close();
    }
  });
});

describe('a gateway that is stopping (SIGTERM)', () => {
  it('fails /readyz at once, and closes a keep-alive connection after the answer it still gives', async () => {
    const engine = await startEmbeddedFhirServer({ dataDir: tempDir() });
    const upstream = await startHoldingProxy(
      engine.baseUrl,
      (method, url) => method === 'GET' && /\/Observation\/[^/?]+$/.test(url),
    );
    const gw = await startTestGateway({ env: { FHIR_BASE_URL: `${upstream.url}/fhir/R4` } });
    try {
      const { id } = await gw.deps.fhir.create('Observation', {
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'weight' },
      });
      const token = await gw.adminToken();
      const agent = new http.Agent({ keepAlive: true });
      const answer = new Promise<http.IncomingMessage>((resolve, reject) =>
        http
          .get(
            `${gw.url}/fhir/Observation/${id}`,
            { agent, headers: { authorization: `Bearer ${token}` } },
            resolve,
          )
          .on('error', reject),
      );
      await upstream.answered;
      const closing = gw.close();
      const ready = await createApp(gw.deps).request('/readyz');
      expect(ready.status).toBe(503);
      expect(await ready.json()).toMatchObject({ status: 'unavailable', checks: { process: 'stopping' } });
      upstream.release();
      const response = await answer;
      response.resume();
      expect(response.statusCode).toBe(200);
      expect(response.headers.connection).toBe('close');
      await closing;
      agent.destroy();
    } finally {
      await gw.close();
      await upstream.close();
      await engine.close();
    }
  });
});
