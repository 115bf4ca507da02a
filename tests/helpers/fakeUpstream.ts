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
 * A loopback proxy in front of a real FHIR server that can refuse chosen requests with `status`
 * (503 unless given) and an OperationOutcome naming the server's insides: failure injection for
 * the one call a test needs to fail (e.g. the compensating DELETE, or a create the server refuses).
 */
export async function startFailingProxy(
  targetBaseUrl: string,
  shouldFail: (method: string, url: string) => boolean,
  status = 503,
): Promise<FakeUpstream> {
  const target = new URL(targetBaseUrl);
  const outcome = {
    resourceType: 'OperationOutcome',
    issue: [
      { severity: 'error', code: 'processing', diagnostics: 'HAPI-0450: refused by db-7.internal.example' },
    ],
  };
  return startFakeUpstream((req, res) => {
    if (shouldFail(req.method, req.url)) {
      res.writeHead(status, { 'content-type': 'application/fhir+json' }).end(JSON.stringify(outcome));
      return;
    }
    forward(target, req, res);
  });
}

/** Sends a recorded request on to `target` and relays the answer, once `beforeReply` has settled. */
export function forward(
  target: URL,
  req: RecordedRequest,
  res: http.ServerResponse,
  beforeReply: () => Promise<void> = async () => {},
): void {
  const headers = { ...req.headers, host: target.host };
  const upstream = http.request(
    { host: target.hostname, port: target.port, method: req.method, path: req.url, headers },
    (answer) => {
      const chunks: Buffer[] = [];
      answer.on('data', (chunk: Buffer) => chunks.push(chunk));
      answer.on('end', async () => {
        await beforeReply();
        // beforeReply may have answered itself, or dropped the connection
        if (res.headersSent || res.destroyed) return;
        res.writeHead(answer.statusCode ?? 502, answer.headers).end(Buffer.concat(chunks));
      });
    },
  );
  upstream.on('error', () => res.writeHead(502).end());
  upstream.end(req.body);
}

/** How an answer is lost: cut, a load balancer's 502, or a 201 naming a record that is not the one written. */
export type AnswerLoss = 'reset' | 'bad_gateway' | 'foreign_location' | 'unreadable_id';

/**
 * A loopback proxy whose chosen requests reach the FHIR server and do their work there, but whose
 * answers are lost on the way back: the connection reset, a load balancer's 502 in their place,
 * or a 201 whose Location is on another server or whose id is no FHIR id.
 */
export async function startLosingProxy(
  targetBaseUrl: string,
  shouldLose: (method: string, url: string) => boolean,
  loss: AnswerLoss,
): Promise<FakeUpstream> {
  const target = new URL(targetBaseUrl);
  return startFakeUpstream((req, res) => {
    if (!shouldLose(req.method, req.url)) return forward(target, req, res);
    forward(target, req, res, async () => {
      if (loss === 'reset') res.socket?.destroy();
      else if (loss === 'bad_gateway')
        res.writeHead(502, { 'content-type': 'text/html' }).end('<h1>502 Bad Gateway</h1>');
      else if (loss === 'foreign_location')
        res.writeHead(201, { location: 'http://fhir.elsewhere.example/fhir/Patient/999/_history/1' }).end();
      else
        res
          .writeHead(201, { 'content-type': 'application/fhir+json' })
          .end('{"resourceType":"Patient","id":"../../x y$"}');
    });
  });
}

export interface HoldingProxy extends FakeUpstream {
  /** Settles once the FHIR server has answered the held request (the answer is not relayed yet). */
  readonly answered: Promise<void>;
  /** Relays the held answer. */
  release(): void;
}

/**
 * A loopback proxy in front of a real FHIR server that holds back its answer to the first request
 * `shouldHold` picks until the test releases it: a slow network after the upstream did the work.
 */
export async function startHoldingProxy(
  targetBaseUrl: string,
  shouldHold: (method: string, url: string) => boolean,
): Promise<HoldingProxy> {
  const target = new URL(targetBaseUrl);
  let answer!: () => void;
  let release!: () => void;
  const answered = new Promise<void>((resolve) => {
    answer = resolve;
  });
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  let holding = false;
  const proxy = await startFakeUpstream((req, res) => {
    if (holding || !shouldHold(req.method, req.url)) {
      forward(target, req, res);
      return;
    }
    holding = true;
    forward(target, req, res, async () => {
      answer();
      await released;
    });
  });
  return { ...proxy, answered, release };
}
