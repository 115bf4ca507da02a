import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientErrorAnswer } from '../../src/http/clientErrors.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

/**
 * What Node's HTTP parser refuses before any route runs is answered as problem+json, like every
 * other refusal (review F: a bare "HTTP/1.1 431" or "400" with no body before).
 */

describe('clientErrorAnswer', () => {
  it.each([
    ['HPE_HEADER_OVERFLOW', '431 Request Header Fields Too Large', 'headers_too_large'],
    ['HPE_CHUNK_EXTENSIONS_OVERFLOW', '413 Content Too Large', 'payload_too_large'],
    ['HPE_INVALID_METHOD', '400 Bad Request', 'validation_failed'],
    ['HPE_INVALID_URL', '400 Bad Request', 'validation_failed'],
    [undefined, '400 Bad Request', 'validation_failed'],
  ])('answers %s with %s, code %s', (code, statusLine, problemCode) => {
    const answer = clientErrorAnswer(code) ?? '';
    const [head, body] = answer.split('\r\n\r\n') as [string, string];
    expect(head.split('\r\n')[0]).toBe(`HTTP/1.1 ${statusLine}`);
    expect(head).toContain('Content-Type: application/problem+json');
    expect(head).toContain(`Content-Length: ${Buffer.byteLength(body)}`);
    expect(head).toContain('Connection: close');
    expect(JSON.parse(body)).toMatchObject({ code: problemCode, status: Number(statusLine.slice(0, 3)) });
  });

  it('answers under /fhir with an OperationOutcome, as every /fhir refusal is answered', () => {
    const answer = clientErrorAnswer('HPE_HEADER_OVERFLOW', '/fhir/Patient?name=x') ?? '';
    const [head, body] = answer.split('\r\n\r\n') as [string, string];
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 431 Request Header Fields Too Large');
    expect(head).toContain('Content-Type: application/fhir+json');
    expect(JSON.parse(body)).toMatchObject({ resourceType: 'OperationOutcome' });
    expect(clientErrorAnswer('HPE_HEADER_OVERFLOW', '/auth/me')).toContain('application/problem+json');
  });

  it('answers nobody whose connection is gone, and a slow client as Node does', () => {
    expect(clientErrorAnswer('ECONNRESET')).toBeUndefined();
    expect(clientErrorAnswer('ERR_HTTP_REQUEST_TIMEOUT')).toMatch(/^HTTP\/1\.1 408 /);
  });
});

describe('requests the HTTP parser refuses', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(() => gw.close());

  /** Sends `request` as raw bytes and reads the whole answer (the server closes the connection). */
  function raw(request: Buffer | string): Promise<string> {
    const { port } = new URL(gw.url);
    return new Promise((resolve, reject) => {
      const socket = net.connect(Number(port), '127.0.0.1', () => socket.write(request));
      let answer = '';
      socket.on('data', (chunk) => {
        answer += chunk.toString('latin1');
      });
      socket.on('end', () => resolve(answer));
      socket.on('error', reject);
    });
  }

  it.each([
    [
      'headers over 16 KiB',
      431,
      `GET /auth/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'a'.repeat(20_000)}\r\n\r\n`,
    ],
    ['an unknown method', 400, 'FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n'],
    [
      'a raw 0xFF byte in the query',
      400,
      Buffer.concat([
        Buffer.from('GET /healthz?a='),
        Buffer.from([0xff]),
        Buffer.from(' HTTP/1.1\r\nHost: x\r\n\r\n'),
      ]),
    ],
  ])('answers %s with %i as problem+json', async (_what, status, request) => {
    const answer = await raw(request);
    expect(answer.split('\r\n')[0]).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(answer).toContain('Content-Type: application/problem+json');
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { status: number };
    expect(body.status).toBe(status);
  });

  it('answers a /fhir request whose headers are too large with an OperationOutcome', async () => {
    const answer = await raw(
      `GET /fhir/Patient HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'a'.repeat(20_000)}\r\n\r\n`,
    );
    expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 431 Request Header Fields Too Large');
    expect(answer).toContain('Content-Type: application/fhir+json');
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toMatchObject({
      resourceType: 'OperationOutcome',
    });
  });

  it('still answers a well-formed request on a new connection afterwards', async () => {
    expect((await gw.call('/healthz')).status).toBe(200);
  });

  it('answers no pipelined request with the refusal of the one after it (diff review)', async () => {
    const answer = await raw('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nFOO / HTTP/1.1\r\nHost: x\r\n\r\n');
    // the connection is cut, or /healthz answered first: never a 400 in its place
    expect(answer === '' || answer.startsWith('HTTP/1.1 200 ')).toBe(true);
  });
});

describe('a refused request on a connection its client keeps half-open', () => {
  it('does not hold the gateway when it stops (diff review: it waited out SHUTDOWN_TIMEOUT_MS)', async () => {
    const gw = await startTestGateway({ env: { SHUTDOWN_TIMEOUT_MS: '4000' } });
    const { port } = new URL(gw.url);
    const socket = net.connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true });
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    const answered = new Promise<void>((resolve) => socket.once('data', () => resolve()));
    socket.write('FOO / HTTP/1.1\r\nHost: x\r\n\r\n');
    await answered;
    const started = Date.now();
    await gw.close();
    socket.destroy();
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});
