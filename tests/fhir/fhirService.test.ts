import { afterEach, describe, expect, it } from 'vitest';
import { AppError } from '../../src/errors.js';
import { createFhirService, type FhirService } from '../../src/fhir/fhirService.js';
import { type FakeUpstream, startFakeUpstream, unusedPort } from '../helpers/fakeUpstream.js';

const open: (FhirService | FakeUpstream)[] = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

function service(baseUrl: string, extra: Partial<Parameters<typeof createFhirService>[0]> = {}) {
  const s = createFhirService({ baseUrl, timeoutMs: 500, auth: { kind: 'none' }, ...extra });
  open.push(s);
  return s;
}

async function upstream(handler: Parameters<typeof startFakeUpstream>[0]) {
  const u = await startFakeUpstream(handler);
  open.push(u);
  return u;
}

async function failure(promise: Promise<unknown>): Promise<AppError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    return error as AppError;
  }
  throw new Error('expected the call to fail');
}

describe('fhirService', () => {
  it('gives 504 upstream_timeout within the timeout when the server never answers', async () => {
    const hang = await upstream(() => {});
    const started = Date.now();
    const error = await failure(service(`${hang.url}/fhir`).request({ method: 'GET', path: 'metadata' }));
    expect(error.status).toBe(504);
    expect(error.code).toBe('upstream_timeout');
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('gives 502 upstream_unavailable when nothing listens', async () => {
    const port = await unusedPort();
    const error = await failure(
      service(`http://127.0.0.1:${port}/fhir`).request({ method: 'GET', path: 'metadata' }),
    );
    expect(error.status).toBe(502);
    expect(error.code).toBe('upstream_unavailable');
  });

  it('gives 502 upstream_error on a 5xx or malformed JSON, without the upstream URL in the public text', async () => {
    const broken = await upstream((req, res) => {
      if (req.url.includes('Patient')) {
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"secret":"internal"}');
      } else {
        res.writeHead(200, { 'content-type': 'application/fhir+json' }).end('{not json');
      }
    });
    const fhir = service(`${broken.url}/fhir`);
    for (const path of ['Patient/1', 'metadata']) {
      const error = await failure(fhir.request({ method: 'GET', path }));
      expect(error.status).toBe(502);
      expect(error.code).toBe('upstream_error');
      expect(error.detail).not.toContain('127.0.0.1');
    }
  });

  it('passes 4xx answers back to the caller as data', async () => {
    const notFound = await upstream((_req, res) => {
      res
        .writeHead(404, { 'content-type': 'application/fhir+json' })
        .end('{"resourceType":"OperationOutcome"}');
    });
    const response = await service(`${notFound.url}/fhir`).request({ method: 'GET', path: 'Patient/x' });
    expect(response.status).toBe(404);
    expect(response.body).toEqual({ resourceType: 'OperationOutcome' });
  });

  it('refuses a path that could leave the configured base', async () => {
    const ok = await upstream((_req, res) => res.end('{}'));
    const fhir = service(`${ok.url}/fhir`);
    await expect(fhir.request({ method: 'GET', path: '../admin' })).rejects.toThrow(/unsafe/);
    await expect(fhir.request({ method: 'GET', path: 'Patient/..' })).rejects.toThrow(/unsafe/);
    await expect(fhir.request({ method: 'GET', path: 'http://evil.example/x' })).rejects.toThrow(/unsafe/);
    expect(ok.requests).toHaveLength(0);
  });

  it('sends the static bearer token of FHIR_AUTH=bearer', async () => {
    const u = await upstream((_req, res) => res.end('{}'));
    await service(`${u.url}/fhir`, { auth: { kind: 'bearer', token: 'static-upstream-token' } }).request({
      method: 'GET',
      path: 'metadata',
    });
    expect(u.requests[0]?.headers.authorization).toBe('Bearer static-upstream-token');
  });

  it('fetches a client-credentials token once, shares it across concurrent calls and reuses it', async () => {
    let issued = 0;
    const auth = await upstream((req, res) => {
      if (req.url === '/token') {
        issued++;
        setTimeout(
          () =>
            res.end(
              JSON.stringify({ access_token: `tok-${issued}`, expires_in: 3600, token_type: 'Bearer' }),
            ),
          50,
        );
      } else {
        res.end('{}');
      }
    });
    const fhir = service(`${auth.url}/fhir`, {
      auth: {
        kind: 'client_credentials',
        tokenUrl: `${auth.url}/token`,
        clientId: 'gateway',
        clientSecret: 's3cret',
        scope: 'system/*.cruds',
      },
    });
    await Promise.all(Array.from({ length: 5 }, () => fhir.request({ method: 'GET', path: 'metadata' })));
    await fhir.request({ method: 'GET', path: 'metadata' });
    expect(issued).toBe(1);
    const tokenRequest = auth.requests.find((r) => r.url === '/token');
    expect(tokenRequest?.body).toContain('grant_type=client_credentials');
    expect(tokenRequest?.body).toContain('scope=system');
    expect(tokenRequest?.headers.authorization).toBe(
      `Basic ${Buffer.from('gateway:s3cret').toString('base64')}`,
    );
    const fhirCalls = auth.requests.filter((r) => r.url.startsWith('/fhir'));
    expect(fhirCalls).toHaveLength(6);
    expect(fhirCalls.every((r) => r.headers.authorization === 'Bearer tok-1')).toBe(true);
  });

  it('renews the client-credentials token once when the FHIR server answers 401', async () => {
    let issued = 0;
    const auth = await upstream((req, res) => {
      if (req.url === '/token') {
        issued++;
        res.end(JSON.stringify({ access_token: `tok-${issued}`, expires_in: 3600 }));
      } else if (req.headers.authorization === 'Bearer tok-1') {
        res.writeHead(401).end('{}');
      } else {
        res.end('{"resourceType":"CapabilityStatement"}');
      }
    });
    const fhir = service(`${auth.url}/fhir`, {
      auth: {
        kind: 'client_credentials',
        tokenUrl: `${auth.url}/token`,
        clientId: 'a',
        clientSecret: 'b',
        scope: undefined,
      },
    });
    const response = await fhir.request({ method: 'GET', path: 'metadata' });
    expect(response.status).toBe(200);
    expect(issued).toBe(2);
  });
});
