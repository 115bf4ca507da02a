import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface FakeUpstream {
  readonly url: string;
  readonly requests: RecordedRequest[];
  close(): Promise<void>;
}

/**
 * A misbehaving HTTP server on loopback (hangs, 5xx, bad JSON, token endpoint) for testing how
 * the gateway handles an upstream it cannot trust. The real FHIR server is used everywhere else.
 */
export async function startFakeUpstream(
  handler: (req: RecordedRequest, res: http.ServerResponse) => void,
): Promise<FakeUpstream> {
  const requests: RecordedRequest[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', () => {
      const recorded = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body };
      requests.push(recorded);
      handler(recorded, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A port on loopback where nothing listens. */
export async function unusedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * A loopback proxy in front of a real FHIR server that can refuse chosen requests with 503:
 * failure injection for the one call a test needs to fail (e.g. the compensating DELETE).
 */
export async function startFailingProxy(
  targetBaseUrl: string,
  shouldFail: (method: string, url: string) => boolean,
): Promise<FakeUpstream> {
  const target = new URL(targetBaseUrl);
  return startFakeUpstream((req, res) => {
    if (shouldFail(req.method, req.url)) {
      res
        .writeHead(503, { 'content-type': 'application/fhir+json' })
        .end('{"resourceType":"OperationOutcome"}');
      return;
    }
    const headers = { ...req.headers, host: target.host };
    const upstream = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.writeHead(502).end());
    upstream.end(req.body);
  });
}
