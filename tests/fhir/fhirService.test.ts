import { afterEach, describe, expect, it } from 'vitest';
import { AppError } from '../../src/errors.js';
import { createFhirService, type FhirService, tokenRenewDelayMs } from '../../src/fhir/fhirService.js';
import {
  asBuiltByGateway,
  isStored,
  isUpstreamSuccess,
  searchInteraction,
  upstreamRefusalOf,
  upstreamStatusError,
} from '../../src/fhir/upstreamStatus.js';
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

/** A FHIR service at `<url>/fhir` that gets its token by client credentials at `<url>/token`. */
function withClientCredentials(url: string) {
  return service(`${url}/fhir`, {
    auth: {
      kind: 'client_credentials',
      tokenUrl: `${url}/token`,
      clientId: 'a',
      clientSecret: 'b',
      scope: undefined,
    },
  });
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
    const error = await failure(service(`${hang.url}/fhir`).capabilities());
    expect(error.status).toBe(504);
    expect(error.code).toBe('upstream_timeout');
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('bounds a request that waits for a connection behind a hung server by the same timeout (not a multiple of it)', async () => {
    const hang = await upstream(() => {});
    const fhir = service(`${hang.url}/fhir`);
    const started = Date.now();
    // more than the pool's 32 connections: the rest wait in undici's queue, where its own timers do not run
    const ends = await Promise.all(
      Array.from({ length: 100 }, () =>
        failure(fhir.read('Patient', '1')).then((error) => ({ error, after: Date.now() - started })),
      ),
    );
    expect(ends.every(({ error }) => error.code === 'upstream_timeout')).toBe(true);
    // 500 ms, plus up to one tick of undici's coarse timers (about 500 ms) and a loaded machine's
    // slack, as for one call above; it took 4 s before (each wave of 32 waited for the one before)
    expect(Math.max(...ends.map(({ after }) => after))).toBeLessThan(2_000);
  });

  it('keeps maxConnections connections: calls to a healthy endpoint get through while fewer calls than that hang (review S1)', async () => {
    const server = await upstream((req, res) => {
      // a server hung on one endpoint only: its other endpoints answer at once
      if (req.url.includes('$everything')) return;
      res.writeHead(200, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify({ resourceType: 'Patient', id: '1' }));
    });
    const answers = async (maxConnections: number) => {
      const fhir = service(`${server.url}/fhir`, { maxConnections });
      const hung = Array.from({ length: 3 }, () =>
        failure(fhir.forward({ method: 'GET', path: 'Patient/1/$everything' })),
      );
      await new Promise((resolve) => setTimeout(resolve, 50));
      const read = await fhir.read('Patient', '1').then(
        (r) => r.status,
        (error: AppError) => error.code,
      );
      await Promise.all(hung);
      return read;
    };
    // three calls hang: with three connections the read waits behind them and times out, with four it is answered
    expect(await answers(3)).toBe('upstream_timeout');
    expect(await answers(4)).toBe(200);
  });

  it('gives 502 upstream_unavailable when nothing listens', async () => {
    const port = await unusedPort();
    const error = await failure(service(`http://127.0.0.1:${port}/fhir`).capabilities());
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
    for (const call of [() => fhir.read('Patient', '1'), () => fhir.capabilities()]) {
      const error = await failure(call());
      expect(error.status).toBe(502);
      expect(error.code).toBe('upstream_error');
      expect(error.detail).not.toContain('127.0.0.1');
    }
  });

  it('maps an upstream 4xx through the one status table, without the upstream diagnostics', async () => {
    const notFound = await upstream((_req, res) => {
      res
        .writeHead(404, { 'content-type': 'application/fhir+json' })
        .end('{"resourceType":"OperationOutcome","issue":[{"diagnostics":"HAPI-2001: secret"}]}');
    });
    const error = await failure(service(`${notFound.url}/fhir`).read('Patient', 'x'));
    expect(error.status).toBe(404);
    expect(error.code).toBe('not_found');
    expect(JSON.stringify(error.detail)).not.toContain('HAPI-2001');
  });

  it('answers 502 when a search returns something other than a Bundle, or an OperationOutcome with 200', async () => {
    const bodies = [
      '{"resourceType":"OperationOutcome","issue":[]}',
      '{"resourceType":"Patient","id":"1"}',
      '[]',
    ];
    let next = 0;
    const odd = await upstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/fhir+json' }).end(bodies[next++ % bodies.length]);
    });
    const fhir = service(`${odd.url}/fhir`);
    for (const _ of bodies) {
      const error = await failure(fhir.search('Observation', new URLSearchParams()));
      expect(error.status).toBe(502);
      expect(error.code).toBe('upstream_error');
    }
  });

  it('refuses an upstream body over 64 MiB with 502 upstream_error, declared or streamed, without reading it all', async () => {
    const huge = await upstream((req, res) => {
      if (req.url.includes('Patient')) {
        // declares more than the limit: refused on the header, before any of it is read
        res.writeHead(200, {
          'content-type': 'application/fhir+json',
          'content-length': String(65 * 1024 * 1024),
        });
        res.write('{"resourceType":"Patient","id":"1","text":"');
        return;
      }
      // no declared length: counted as it streams, refused once past the limit
      res.writeHead(200, { 'content-type': 'application/fhir+json' });
      const chunk = ' '.repeat(1024 * 1024);
      let sent = 0;
      const more = () => {
        while (sent < 70 && res.write(chunk)) sent++;
        if (sent < 70) res.once('drain', more);
      };
      more();
    });
    const fhir = service(`${huge.url}/fhir`, { timeoutMs: 5_000 });
    const started = Date.now();
    const declared = await failure(fhir.read('Patient', '1'));
    expect(declared.code).toBe('upstream_error');
    expect(Date.now() - started).toBeLessThan(1_000);
    const streamed = await failure(fhir.capabilities());
    expect(streamed.code).toBe('upstream_error');
    expect(streamed.status).toBe(502);
  });

  it('answers 502 when a read returns another resource type than asked', async () => {
    const odd = await upstream((_req, res) => res.end('{"resourceType":"Observation","id":"1"}'));
    const error = await failure(service(`${odd.url}/fhir`).read('Patient', '1'));
    expect(error.status).toBe(502);
  });

  it('takes the id and version of a create from Location when the server returns no body', async () => {
    const minimal = await upstream((_req, res) => {
      res.writeHead(201, { location: `${minimal.url}/fhir/Observation/123/_history/4` }).end();
    });
    const written = await service(`${minimal.url}/fhir`).create('Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
    });
    expect(written).toMatchObject({ status: 201, id: '123', versionId: '4', body: undefined });
  });

  it.each([
    // another server's Location could name anyone's record (review S1)
    ['on another server', 'http://elsewhere/fhir/Observation/123/_history/4'],
    ['sent twice', ['{base}/Observation/123', '{base}/Observation/124']],
    ['with a path that leaves the base', '{base}/../Observation/123'],
    ['naming an id of dots alone', '{base}/Observation/..'],
  ])('refuses a Location %s as the answer to a create without a body: 502', async (_what, location) => {
    const minimal = await upstream((_req, res) => {
      const base = `${minimal.url}/fhir`;
      const named = Array.isArray(location) ? location : [location];
      res.setHeader(
        'location',
        named.map((l) => l.replace('{base}', base)),
      );
      res.writeHead(201).end();
    });
    const create = service(`${minimal.url}/fhir`).create('Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { text: 'x' },
    });
    expect((await failure(create)).status).toBe(502);
  });

  it.each([
    ['no body, no Location: the id written to, the version from the ETag', { etag: 'W/"7"' }, '', '7'],
    ['no body, no Location and no ETag', {}, '', undefined],
    ['no body, a Location naming it', { location: '{base}/Observation/5/_history/8' }, '', '8'],
    // HAPI behind a proxy names its public address: the record is still the one written to (diff review)
    [
      'no body, a Location on another base',
      { location: 'https://fhir.example.org/fhir/Observation/5/_history/8', etag: 'W/"8"' },
      '',
      '8',
    ],
    [
      'its record',
      { 'content-type': 'application/fhir+json' },
      '{"resourceType":"Observation","id":"5","meta":{"versionId":"9"}}',
      '9',
    ],
  ])('takes an update answered with %s (review V-2)', async (_what, headers, body, versionId) => {
    const minimal = await upstream((_req, res) => {
      const location = (headers as { location?: string }).location?.replace('{base}', `${minimal.url}/fhir`);
      res.writeHead(200, { ...headers, ...(location ? { location } : {}) }).end(body);
    });
    const written = await service(`${minimal.url}/fhir`).update('Observation', '5', {
      resourceType: 'Observation',
      id: '5',
      status: 'final',
      code: { text: 'x' },
    });
    expect(written).toMatchObject({ status: 200, id: '5', versionId });
  });

  it.each([
    ['a Location naming another record', { location: '{base}/Observation/6/_history/8' }, ''],
    [
      'another record',
      { 'content-type': 'application/fhir+json' },
      '{"resourceType":"Observation","id":"6","meta":{"versionId":"9"}}',
    ],
  ])('refuses an update answered with %s: 502', async (_what, headers, body) => {
    const minimal = await upstream((_req, res) => {
      const location = (headers as { location?: string }).location?.replace('{base}', `${minimal.url}/fhir`);
      res.writeHead(200, { ...headers, ...(location ? { location } : {}) }).end(body);
    });
    const update = service(`${minimal.url}/fhir`).update('Observation', '5', {
      resourceType: 'Observation',
      id: '5',
      status: 'final',
      code: { text: 'x' },
    });
    expect((await failure(update)).status).toBe(502);
  });

  it.each([
    ['an object', { a: 1 }],
    ['a path', '../../x y$'],
    ['65 characters', 'a'.repeat(65)],
  ])('refuses a written record whose id is %s: 502', async (_what, id) => {
    const u = await upstream((_req, res) => {
      res.writeHead(201, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify({ resourceType: 'Observation', id }));
    });
    const create = service(`${u.url}/fhir`).create('Observation', { resourceType: 'Observation' } as never);
    expect((await failure(create)).status).toBe(502);
  });

  it('treats a delete of a missing or deleted resource as done, and a 5xx as a failure', async () => {
    const statuses = [404, 410, 503];
    let next = 0;
    const u = await upstream((_req, res) => res.writeHead(statuses[next++] ?? 500).end());
    const fhir = service(`${u.url}/fhir`);
    await fhir.delete('Patient', 'a');
    await fhir.delete('Patient', 'b');
    expect((await failure(fhir.delete('Patient', 'c'))).status).toBe(502);
  });

  it('follows a paging link at the base (HAPI _getpages) verbatim', async () => {
    const u = await upstream((_req, res) => res.end('{"resourceType":"Bundle","type":"searchset"}'));
    await service(`${u.url}/fhir`).page('?_getpages=abc-123&_getpagesoffset=20&_count=20');
    expect(u.requests[0]?.url).toBe('/fhir?_getpages=abc-123&_getpagesoffset=20&_count=20');
  });

  it('refuses a path that could leave the configured base', async () => {
    const ok = await upstream((_req, res) => res.end('{}'));
    const fhir = service(`${ok.url}/fhir`);
    await expect(fhir.forward({ method: 'GET', path: '../admin' })).rejects.toThrow(/unsafe/);
    await expect(fhir.read('Patient', '..')).rejects.toThrow(/unsafe/);
    await expect(fhir.forward({ method: 'GET', path: 'http://evil.example/x' })).rejects.toThrow(/unsafe/);
    // a paging link comes from the server: one that is not plain is its fault (502), not ours
    expect((await failure(fhir.page('../admin?x=1'))).status).toBe(502);
    expect((await failure(fhir.page('http://evil.example/x'))).status).toBe(502);
    expect(ok.requests).toHaveLength(0);
  });

  it('sends the static bearer token of FHIR_AUTH=bearer', async () => {
    const u = await upstream((_req, res) => res.end('{}'));
    await service(`${u.url}/fhir`, { auth: { kind: 'bearer', token: 'static-upstream-token' } }).forward({
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
    const metadata = () => fhir.forward({ method: 'GET', path: 'metadata' });
    await Promise.all(Array.from({ length: 5 }, metadata));
    await metadata();
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

  // the token was awaited under its own FHIR_TIMEOUT_MS before the call's began: /readyz took 6 s
  // to say 503 behind a hung token endpoint, not its 2 s (helper review)
  it('spends the call’s own time waiting for a token: a hung token endpoint is a 504 within it', async () => {
    const hung = await upstream((req, res) => {
      if (req.url !== '/token') res.end('{"resourceType":"CapabilityStatement"}');
    });
    const fhir = withClientCredentials(hung.url);
    const started = performance.now();
    const error = await failure(fhir.capabilities({ timeoutMs: 150 }));
    expect(error.code).toBe('upstream_timeout');
    expect(performance.now() - started).toBeLessThan(400); // the service's own timeout is 500 ms
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
    const fhir = withClientCredentials(auth.url);
    const statement = await fhir.capabilities();
    expect(statement.resourceType).toBe('CapabilityStatement');
    expect(issued).toBe(2);
  });

  it.each([
    ['stalls its body past the timeout', 'upstream_timeout', 504],
    ['cuts the connection in the middle of its body', 'upstream_unavailable', 502],
  ] as const)(
    'fails a call whose token endpoint %s as the upstream (%s), not as ours',
    async (how, code, status) => {
      const auth = await upstream((req, res) => {
        if (req.url !== '/token') return void res.end('{}');
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
        res.write('{"access_token":');
        if (how.startsWith('cuts')) setTimeout(() => res.socket?.destroy(), 20);
      });
      const fhir = withClientCredentials(auth.url);
      const error = await failure(fhir.capabilities());
      expect(error.code).toBe(code);
      expect(error.status).toBe(status);
    },
  );

  it('reuses a short-lived client-credentials token for most of its life instead of fetching one per call', async () => {
    let issued = 0;
    const auth = await upstream((req, res) => {
      if (req.url === '/token') {
        issued++;
        res.end(JSON.stringify({ access_token: `tok-${issued}`, expires_in: 30 }));
      } else res.end('{}');
    });
    const fhir = withClientCredentials(auth.url);
    for (let i = 0; i < 10; i++) await fhir.forward({ method: 'GET', path: 'metadata' });
    expect(issued).toBe(1);
  });
});

describe('upstream status mapping', () => {
  it.each([
    [304, undefined],
    [200, undefined],
    [201, undefined],
    [400, 400],
    [401, 502],
    [403, 502],
    [404, 404],
    [405, 405],
    [409, 409],
    [410, 404],
    [412, 412],
    [413, 413],
    [414, 414],
    [415, 415],
    [422, 422],
    [431, 414],
    [429, 502],
    [302, 502],
    [500, 502],
    [503, 502],
  ])('upstream %i answers our %s', (upstreamStatus, ours) => {
    if (ours === undefined) expect(isUpstreamSuccess(upstreamStatus)).toBe(true);
    else {
      expect(isUpstreamSuccess(upstreamStatus)).toBe(false);
      expect(upstreamStatusError(upstreamStatus).status).toBe(ours);
    }
  });

  // a write is stored only on a 2xx: a 304 (a cache in front of the server) stored nothing
  it.each([
    [200, true],
    [201, true],
    [204, true],
    [304, false],
    [400, false],
  ])('a write answered %i was stored: %s', (status, stored) => {
    expect(isStored(status)).toBe(stored);
  });

  it.each([
    [404, 502],
    [410, 502],
    [400, 400],
    [412, 412],
    [500, 502],
  ])(
    'upstream %i to a search of a type answers our %s: the type cannot be missing',
    (upstreamStatus, ours) => {
      expect(upstreamStatusError(upstreamStatus, 'search').status).toBe(ours);
    },
  );

  it.each([
    [404, 400],
    [410, 502],
    [400, 400],
    [500, 502],
  ])(
    'upstream %i to a search naming a value set answers our %s: HAPI says 404 for an unknown value set',
    (upstreamStatus, ours) => {
      expect(upstreamStatusError(upstreamStatus, 'value-set-search').status).toBe(ours);
    },
  );

  it.each([
    ['GET', 'search', undefined, 400, undefined],
    ['GET', 'forwarded', undefined, 400, undefined],
    ['HEAD', 'other', undefined, 400, undefined],
    ['DELETE', 'forwarded', 'GET, PUT', 405, 'GET, PUT'],
    ['POST', 'forwarded', undefined, 405, undefined],
  ] as const)(
    'upstream 405 to a %s (%s, Allow %s) answers our %s with Allow %s: HAPI says 405 for a modifier it disabled',
    (method, interaction, allow, ours, ourAllow) => {
      const error = upstreamStatusError(405, interaction, { method, allow });
      expect(error.status).toBe(ours);
      expect(error.headers?.Allow).toBe(ourAllow);
    },
  );

  it.each([
    ['code:in=http://x/vs', 'value-set-search'],
    ['code:not-in=http://x/vs&status=final', 'value-set-search'],
    ['code=http://x|1', 'search'],
    ['code:below=http://x|1', 'search'],
    ['', 'search'],
    ['_getpages=abc&_getpagesoffset=20&_count=20', 'page'],
  ])('a search of %s is a %s to the status mapping', (query, interaction) => {
    expect(searchInteraction(new URLSearchParams(query))).toBe(interaction);
  });

  it.each([
    [404, 410],
    [410, 410],
    [400, 400],
    [500, 502],
  ])(
    'upstream %i to a page the server linked to answers our %s: it forgot the search (HAPI-0417), which is to run again',
    (upstreamStatus, ours) => {
      const error = upstreamStatusError(upstreamStatus, 'page');
      expect(error.status).toBe(ours);
      if (ours === 410) expect(error.detail).toMatch(/run the search again/);
    },
  );

  it.each([
    [409, 'GET', 'other', 502],
    [412, 'GET', 'search', 502],
    [413, 'GET', 'other', 502],
    [415, 'HEAD', 'other', 502],
    [422, 'GET', 'page', 502],
    [413, 'POST', 'other', 413],
    [422, 'PUT', 'other', 422],
    [412, 'POST', 'other', 412],
    [412, 'GET', 'forwarded', 412],
    [404, 'POST', 'other', 502],
    [410, 'POST', 'other', 502],
    [404, 'POST', 'forwarded', 404],
    [404, 'PUT', 'other', 404],
    [400, 'GET', 'other', 400],
  ] as const)(
    'upstream %i to a %s (%s) answers our %s: a read the gateway made has no body or precondition to refuse, a create no missing record',
    (upstreamStatus, method, interaction, ours) => {
      expect(upstreamStatusError(upstreamStatus, interaction, { method }).status).toBe(ours);
    },
  );

  it.each([
    [409, 412],
    [412, 412],
    [404, 404],
    [400, 400],
  ])(
    'upstream %i to a write with If-Match answers our %s: HAPI says 409 for a stale version',
    (upstreamStatus, ours) => {
      expect(upstreamStatusError(upstreamStatus, 'versioned-write').status).toBe(ours);
    },
  );

  it.each([
    [410, 410],
    [404, 404],
    [409, 409],
    [500, 502],
  ])(
    "upstream %i to an admin's forwarded request answers our %s: only an admin is told a resource was deleted",
    (upstreamStatus, ours) => {
      expect(upstreamStatusError(upstreamStatus, 'forwarded').status).toBe(ours);
    },
  );

  // a slim endpoint's request is the gateway's own: an upstream 400 names nothing the caller can mend
  it.each([
    ['a 400', upstreamStatusError(400), 'upstream_error'],
    ['a 404', upstreamStatusError(404), 'not_found'],
    ['a 422', upstreamStatusError(422), 'upstream_error'],
    ['a 405', upstreamStatusError(405, 'other', { method: 'GET' }), 'upstream_error'],
    ['a 413', upstreamStatusError(413), 'upstream_error'],
    ['a 410', upstreamStatusError(410), 'not_found'],
    ['a 502 already', upstreamStatusError(503), 'upstream_error'],
  ])('answers %s from the FHIR server to a slim request with %s', async (_, error, code) => {
    await expect(asBuiltByGateway(Promise.reject(error))).rejects.toMatchObject({ code });
  });

  it('passes on what is no refusal of the FHIR server, and a success', async () => {
    const bug = new TypeError('a bug');
    await expect(asBuiltByGateway(Promise.reject(bug))).rejects.toBe(bug);
    await expect(asBuiltByGateway(Promise.resolve('ok'))).resolves.toBe('ok');
  });

  // the label our logs, the audit and the outbox read; a response never carries it
  it.each([
    ['a refusal the mapping made', upstreamStatusError(422), 'http_422'],
    ['one mapped to a page expiry', upstreamStatusError(410, 'page'), 'http_410'],
    ['a failure no status names (502)', upstreamStatusError(500), undefined],
    ['a refusal wrapped once more', new Error('outer', { cause: upstreamStatusError(400) }), 'http_400'],
    ['a cause whose code only looks alike', new Error('x', { cause: { code: 'http_4000' } }), undefined],
    ['no cause', new Error('x'), undefined],
    ['no error', undefined, undefined],
  ])('reads the upstream refusal of %s', (_, error, label) => {
    expect(upstreamRefusalOf(error)).toBe(label);
  });

  it.each([
    [30_000, 22_500],
    [60_000, 45_000],
    [3_600_000, 3_540_000],
    [5_000, 3_750],
  ])('renews a token living %i ms after %i ms', (lifetime, renewAfter) => {
    expect(tokenRenewDelayMs(lifetime)).toBe(renewAfter);
  });
});
