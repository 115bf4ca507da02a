import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

/**
 * CORS for FHIR clients in a browser: the conditional headers they send pass the preflight,
 * and the CapabilityStatement's `rest.security.cors` says whether any origin is allowed at all.
 * https://hl7.org/fhir/R4/capabilitystatement-definitions.html#CapabilityStatement.rest.security.cors
 */

const ORIGIN = 'https://app.example.com';

interface Capability {
  rest: { security: { cors: boolean } }[];
}

function preflight(gw: TestGateway, path: string, method: string, headers: string) {
  return gw.call(path, {
    method: 'OPTIONS',
    headers: {
      origin: ORIGIN,
      'access-control-request-method': method,
      'access-control-request-headers': headers,
    },
  });
}

function allowedHeaders(response: Response): string[] {
  return (response.headers.get('access-control-allow-headers') ?? '')
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter(Boolean);
}

describe('CORS with CORS_ORIGINS set', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ env: { CORS_ORIGINS: ORIGIN } });
  });
  afterAll(() => gw.close());

  it.each([
    ['a conditional read', 'GET', 'authorization,if-none-match,if-modified-since'],
    ['a versioned update', 'PUT', 'authorization,content-type,if-match,prefer'],
    ['a conditional create', 'POST', 'authorization,content-type,if-none-exist,prefer'],
  ])('lets %s through the preflight with the headers FHIR clients send', async (_, method, headers) => {
    const response = await preflight(gw, '/fhir/Observation/abc', method, headers);
    expect(response.status).toBe(204);
    expect(response.headers.get('access-control-allow-origin')).toBe(ORIGIN);
    expect(allowedHeaders(response)).toEqual(expect.arrayContaining(headers.split(',')));
  });

  it('exposes ETag and the other headers the guide names to the allowed origin', async () => {
    const response = await gw.call('/fhir/metadata', { headers: { origin: ORIGIN } });
    expect(response.headers.get('access-control-allow-origin')).toBe(ORIGIN);
    const exposed = (response.headers.get('access-control-expose-headers') ?? '').toLowerCase().split(',');
    expect(exposed).toContain('etag');
    // the guide tells scripts to read these (a replayed create; a SMART token's missing scope)
    expect(exposed).toEqual(
      expect.arrayContaining(['idempotent-replayed', 'www-authenticate', 'last-modified']),
    );
  });

  it('declares rest.security.cors true in /fhir/metadata', async () => {
    const capability = (await (await gw.call('/fhir/metadata')).json()) as Capability;
    expect(capability.rest[0]?.security.cors).toBe(true);
  });
});

describe('CORS with CORS_ORIGINS empty (the default)', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(() => gw.close());

  it('gives no origin the CORS headers', async () => {
    const response = await preflight(gw, '/fhir/Observation/abc', 'GET', 'authorization,if-none-match');
    expect(response.status).toBe(204);
    // nor what the API takes (review S3): no Access-Control-* header at all
    expect([...response.headers.keys()].filter((name) => name.startsWith('access-control-'))).toEqual([]);
    // "empty: no CORS" (.env.example): an answer names no exposed headers and does not vary by Origin (review S3)
    const answer = await gw.call('/healthz', { headers: { origin: 'https://app.example.com' } });
    expect(answer.headers.get('access-control-expose-headers')).toBeNull();
    expect(answer.headers.get('vary')).toBeNull();
  });

  it('declares rest.security.cors false in /fhir/metadata', async () => {
    expect(gw.deps.config.corsOrigins).toEqual([]);
    const capability = (await (await gw.call('/fhir/metadata')).json()) as Capability;
    expect(capability.rest[0]?.security.cors).toBe(false);
  });
});
