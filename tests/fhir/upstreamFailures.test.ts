import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';
import { type FakeUpstream, startFakeUpstream } from '../helpers/fakeUpstream.js';
import { startTestGateway, type TestGateway, tempDir } from '../helpers/gateway.js';
import { provision, signup } from '../helpers/journey.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * An upstream that misbehaves on chosen requests, behind every path a patient uses: each gets
 * the one status mapping (502 for 5xx, for a search that answers something other than a
 * Bundle, and for an OperationOutcome with 200), never a 404 or 200 that hides the failure.
 */

type Mode =
  | 'pass'
  | 'patient-500'
  | 'patient-400'
  | 'search-outcome-200'
  | 'search-not-bundle'
  | 'search-404-html'
  | 'search-400'
  | 'write-hangs'
  | 'write-applied-500'
  | 'write-applied-reset'
  | 'write-refused-400'
  | 'read-204'
  | 'read-other'
  | 'search-too-many'
  | 'search-two-entry-members'
  | 'write-answers-odd-version'
  | 'metadata-odd'
  | 'batch-odd-nested'
  | 'write-answers-304'
  | 'write-answers-other'
  | `${'search' | 'patient'}-${(typeof REFUSALS)[number]}`;

/** Refusals of a body or a precondition, which a read the gateway built has neither of. */
const REFUSALS = [405, 409, 412, 413, 415, 422] as const;

const OUTCOME = JSON.stringify({
  resourceType: 'OperationOutcome',
  issue: [{ severity: 'error', code: 'invalid', diagnostics: 'db-7 refused it' }],
});

describe('every patient path when the FHIR server answers badly', () => {
  let engine: Awaited<ReturnType<typeof startEmbeddedFhirServer>>;
  let proxy: FakeUpstream;
  let gw: TestGateway;
  let smtp: SmtpCapture;
  let token: string;
  let mode: Mode = 'pass';
  /** The gateway's questions for the statement (/fhir/metadata's; /readyz asks with `_summary`). */
  let metadataAsked = 0;

  beforeAll(async () => {
    engine = await startEmbeddedFhirServer({ dataDir: tempDir() });
    const target = new URL(engine.baseUrl);
    proxy = await startFakeUpstream((req, res) => {
      if (/\/metadata$/.test(req.url)) metadataAsked++;
      const isSearch = req.method === 'GET' && /\/Observation(\?|$)/.test(req.url);
      const refusal = /^(search|patient)-(\d{3})$/.exec(mode);
      const isPatientRead = req.method === 'GET' && /\/Patient\/[^/?]+$/.test(req.url);
      if (refusal && (refusal[1] === 'search' ? isSearch : isPatientRead)) {
        res.writeHead(Number(refusal[2]), { 'content-type': 'application/fhir+json' }).end(OUTCOME);
        return;
      }
      if (mode === 'write-hangs' && req.method === 'POST') {
        // applied, never answered: the request reaches the server, the answer never leaves it
        return;
      }
      if (mode === 'read-204' && req.method === 'GET' && /\/Observation\/[^/?]+$/.test(req.url)) {
        res.writeHead(204).end();
        return;
      }
      // successes the request could not have had: relayed, they said a write or read happened that did not
      if (mode === 'read-other' && req.method === 'GET' && /\/Observation\/[^/?]+$/.test(req.url)) {
        res
          .writeHead(200, { 'content-type': 'application/fhir+json' })
          .end('{"resourceType":"Patient","id":"x1"}');
        return;
      }
      if (mode === 'search-too-many' && isSearch) {
        // 30 of the patient's own Observations, whatever _count asked
        const subject = /(?:subject|patient)=(?:Patient(?:%2F|\/))?([^&]+)/.exec(req.url)?.[1] ?? '';
        const entry = Array.from({ length: 30 }, (_, i) => ({
          resource: {
            resourceType: 'Observation',
            id: `many-${i}`,
            status: 'final',
            code: { text: 'many' },
            subject: { reference: `Patient/${decodeURIComponent(subject)}` },
          },
        }));
        res
          .writeHead(200, { 'content-type': 'application/fhir+json' })
          .end(JSON.stringify({ resourceType: 'Bundle', type: 'searchset', entry }));
        return;
      }
      if (mode === 'search-two-entry-members' && isSearch) {
        // JSON.parse keeps the last "entry": the check reads it, and must not edit the first instead
        const subject = /(?:subject|patient)=(?:Patient(?:%2F|\/))?([^&]+)/.exec(req.url)?.[1] ?? '';
        const of = (id: string, patient: string) =>
          JSON.stringify({
            resource: {
              resourceType: 'Observation',
              id,
              status: 'final',
              code: { text: 'two members' },
              subject: { reference: `Patient/${patient}` },
            },
          });
        const own = decodeURIComponent(subject);
        res
          .writeHead(200, { 'content-type': 'application/fhir+json' })
          .end(
            `{"resourceType":"Bundle","type":"searchset","entry":[${of('first-1', own)},${of('first-2', own)}],` +
              `"entry":[${of('canary-obs', 'canary-patient')},${of('own-obs', own)}]}`,
          );
        return;
      }
      if (mode === 'batch-odd-nested' && req.method === 'POST' && /\/R4\/?$/.test(req.url)) {
        // a batch answer whose searches' Bundles are not what R4 says: a link that is an object, a url that is a number
        const inner = (link: unknown) => ({
          response: { status: '200 OK' },
          resource: { resourceType: 'Bundle', type: 'searchset', link },
        });
        res.writeHead(200, { 'content-type': 'application/fhir+json' }).end(
          JSON.stringify({
            resourceType: 'Bundle',
            type: 'batch-response',
            entry: [inner({ url: 'x' }), inner([{ relation: 'next', url: 7 }])],
          }),
        );
        return;
      }
      if (mode === 'metadata-odd' && /\/metadata(\?|$)/.test(req.url)) {
        // a statement whose parts are not what R4 says: lists that are objects, names missing, numbers
        res.writeHead(200, { 'content-type': 'application/fhir+json' }).end(
          JSON.stringify({
            resourceType: 'CapabilityStatement',
            status: 'active',
            kind: 'instance',
            fhirVersion: { at: 'db-7' },
            format: ['json'],
            rest: [
              {
                mode: 'server',
                resource: [
                  {
                    type: 'Patient',
                    interaction: { code: 'read' },
                    searchParam: [{ type: 'token' }, { name: '_id', type: 'token' }, null, 7],
                  },
                  { type: 7 },
                  null,
                  {
                    type: 'Observation',
                    interaction: [{ code: 'read' }, { code: 5 }],
                    searchParam: { name: 'code' },
                  },
                ],
              },
            ],
          }),
        );
        return;
      }
      if (mode === 'write-answers-odd-version' && req.method === 'POST') {
        // a version no header can carry (a character past Latin-1): the write is done all the same
        res.writeHead(201, { 'content-type': 'application/fhir+json' }).end(
          JSON.stringify({
            resourceType: 'Observation',
            id: 'odd-version',
            meta: { versionId: '\uff11' },
            status: 'final',
            code: { text: 'weight' },
          }),
        );
        return;
      }
      if (mode === 'write-answers-304' && req.method === 'POST') {
        res.writeHead(304).end();
        return;
      }
      if (mode === 'write-answers-other' && req.method === 'POST') {
        res
          .writeHead(200, { 'content-type': 'application/fhir+json' })
          .end('{"resourceType":"Patient","id":"x1"}');
        return;
      }
      if (mode === 'write-refused-400' && req.method === 'POST') {
        res.writeHead(400, { 'content-type': 'application/fhir+json' }).end(OUTCOME);
        return;
      }
      const applied =
        req.method === 'POST' && (mode === 'write-applied-500' || mode === 'write-applied-reset');
      if (mode === 'patient-500' && req.method === 'GET' && /\/Patient\/[^/?]+$/.test(req.url)) {
        res.writeHead(500, { 'content-type': 'text/html' }).end('<h1>Internal error at db-7.internal</h1>');
      } else if (mode === 'patient-400' && req.method === 'GET' && /\/Patient\/[^/?]+$/.test(req.url)) {
        res.writeHead(400, { 'content-type': 'application/fhir+json' }).end(OUTCOME);
      } else if (mode === 'search-404-html' && isSearch) {
        // a base URL that points at something other than a FHIR server
        res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>Not Found at db-7.internal</h1>');
      } else if (mode === 'search-400' && isSearch) {
        // e.g. a server that does not support the slim endpoint's _sort
        res.writeHead(400, { 'content-type': 'application/fhir+json' }).end(OUTCOME);
      } else if (mode === 'search-outcome-200' && isSearch) {
        res
          .writeHead(200, { 'content-type': 'application/fhir+json' })
          .end('{"resourceType":"OperationOutcome","issue":[]}');
      } else if (mode === 'search-not-bundle' && isSearch) {
        res
          .writeHead(200, { 'content-type': 'application/fhir+json' })
          .end('{"resourceType":"Patient","id":"x"}');
      } else {
        const upstream = http.request(
          {
            host: target.hostname,
            port: target.port,
            method: req.method,
            path: req.url,
            headers: req.headers,
          },
          (answer) => {
            if (!applied) {
              res.writeHead(answer.statusCode ?? 502, answer.headers);
              answer.pipe(res);
              return;
            }
            // the server applied the write; its answer is lost on the way (a proxy's 500, a reset)
            answer.resume();
            if (mode === 'write-applied-reset') res.socket?.destroy();
            else
              res
                .writeHead(500, { 'content-type': 'text/html' })
                .end('<h1>Internal error at db-7.internal</h1>');
          },
        );
        upstream.end(req.body);
      }
    });
    smtp = await startSmtpCapture();
    gw = await startTestGateway({
      env: { SMTP_URL: smtp.url, FHIR_BASE_URL: `${proxy.url}${target.pathname}`, FHIR_TIMEOUT_MS: '1500' },
    });
    const p = await provision(gw, smtp, 'fragile@example.com');
    token = (
      (await (
        await signup(gw, { email: p.email, access_code: p.code, password: 'a long and plain passphrase' })
      ).json()) as {
        token: string;
      }
    ).token;
  });

  afterAll(async () => {
    await gw.close();
    await proxy.close();
    await engine.close();
    await smtp.close();
  });

  it.each([
    ['patient-500', '/patient/profile', 502],
    ['search-outcome-200', '/patient/observations', 502],
    ['search-not-bundle', '/patient/observations', 502],
    ['search-outcome-200', '/fhir/Observation', 502],
    ['search-not-bundle', '/fhir/Observation', 502],
    ['patient-400', '/patient/profile', 502],
    ['search-404-html', '/patient/observations', 502],
    ['search-404-html', '/fhir/Observation', 502],
    ['search-400', '/patient/observations', 502],
    // through the passthrough the query is the caller's own: the server's refusal of it is theirs to mend
    ['search-400', '/fhir/Observation', 400],
    ['pass', '/patient/profile', 200],
    ['pass', '/fhir/Observation', 200],
    // more than _count asked: cut, the page would skip records no cursor shows
    ['search-too-many', '/patient/observations?limit=5', 502],
    ['search-too-many', '/patient/observations?limit=50', 200],
    // a read has no body or precondition to refuse: these are the server's fault (a 413 said "your body is too large" to a GET)
    ...REFUSALS.flatMap((status) => [
      [`search-${status}`, '/patient/observations', 502] as const,
      [`patient-${status}`, '/patient/profile', 502] as const,
    ]),
    ...([409, 412, 413, 415, 422] as const).map(
      (status) => [`search-${status}`, '/fhir/Observation', 502] as const,
    ),
  ] as const)('with the upstream in mode %s, %s answers %i', async (m, path, status) => {
    mode = m;
    const response = await gw.call(path, { token });
    const text = await response.text();
    expect(response.status).toBe(status);
    expect(text).not.toContain('db-7');
    expect(text).not.toContain(proxy.url);
  });

  it("answers an admin's write whose resource has a versionId no header can carry 201, without an ETag", async () => {
    mode = 'write-answers-odd-version';
    const response = await gw.call('/fhir/Observation', {
      method: 'POST',
      token: await gw.adminToken(),
      json: { resourceType: 'Observation', status: 'final', code: { text: 'weight' } },
    });
    mode = 'pass';
    expect(response.status).toBe(201);
    expect(response.headers.get('etag')).toBeNull();
    expect(((await response.json()) as { id: string }).id).toBe('odd-version');
  });

  it("answers an admin's batch whose answer holds odd Bundles without a failure of ours", async () => {
    mode = 'batch-odd-nested';
    const search = { request: { method: 'GET', url: 'Observation?code=x' } };
    const response = await gw.call('/fhir', {
      method: 'POST',
      token: await gw.adminToken(),
      json: { resourceType: 'Bundle', type: 'batch', entry: [search, search] },
      headers: { 'content-type': 'application/fhir+json' },
    });
    mode = 'pass';
    expect(response.status).toBe(200);
    expect(((await response.json()) as { type: string }).type).toBe('batch-response');
  });

  it('answers /fhir/metadata 200 from a statement with odd parts, leaving them out', async () => {
    mode = 'metadata-odd';
    const response = await gw.call('/fhir/metadata');
    mode = 'pass';
    const text = await response.text();
    expect(response.status).toBe(200);
    expect(text).not.toContain('db-7');
    const statement = JSON.parse(text) as {
      fhirVersion: string;
      rest: { resource: { type: string; interaction: { code: string }[] }[] }[];
    };
    expect(statement.fhirVersion).toBe('4.0.1');
    expect(statement.rest[0]?.resource.map((r) => r.type)).toEqual(['Patient', 'Observation']);
    expect(statement.rest[0]?.resource[1]?.interaction).toEqual([{ code: 'read' }]);
  });

  // public: a call per request let anonymous callers spend the upstream's connections (helper review)
  it('asks the upstream for /fhir/metadata once for many anonymous calls', async () => {
    const before = metadataAsked;
    const answers = await Promise.all(Array.from({ length: 5 }, () => gw.call('/fhir/metadata')));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200]);
    expect((await gw.call('/fhir/metadata')).status).toBe(200);
    expect(metadataAsked - before).toBeLessThanOrEqual(1);
  });

  it('shows only what the check read when the Bundle has two "entry" members', async () => {
    mode = 'search-two-entry-members';
    const response = await gw.call('/fhir/Observation', { token });
    mode = 'pass';
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).not.toContain('canary');
    const bundle = JSON.parse(text) as { entry?: { resource: { id: string } }[] };
    expect(bundle.entry?.map((e) => e.resource.id)).toEqual(['own-obs']);
  });

  it("answers an admin's read the server answered 204 (no resource) with 502, never an empty 204", async () => {
    const admin = await gw.adminToken();
    const created = await gw.call('/fhir/Observation', {
      method: 'POST',
      token: admin,
      json: { resourceType: 'Observation', status: 'final', code: { text: 'weight' } },
    });
    const { id } = (await created.json()) as { id: string };
    mode = 'read-204';
    const response = await gw.call(`/fhir/Observation/${id}`, { token: admin });
    mode = 'pass';
    expect(response.status).toBe(502);
    expect(await response.json()).toMatchObject({ resourceType: 'OperationOutcome' });
    // nor another record than the one asked for
    mode = 'read-other';
    const other = await gw.call(`/fhir/Observation/${id}`, { token: admin });
    mode = 'pass';
    expect(other.status).toBe(502);
    expect(await other.text()).not.toContain('x1');
  });

  it.each([
    ['did not answer in time', 'write-hangs', 504, 'upstream_timeout', { applied: 'unknown' }],
    ['applied, then answered 500', 'write-applied-500', 502, 'upstream_error', { applied: 'unknown' }],
    [
      'applied, then reset the connection',
      'write-applied-reset',
      502,
      'upstream_unavailable',
      { applied: 'unknown' },
    ],
    ['refused with 400', 'write-refused-400', 400, 'validation_failed', {}],
    [
      'answered 304 (nothing a create answers)',
      'write-answers-304',
      502,
      'upstream_error',
      { applied: 'unknown' },
    ],
    ['answered with another record', 'write-answers-other', 502, 'upstream_error', { applied: 'unknown' }],
  ] as const)(
    'audits an admin write the server %s as failed, its outcome unknown unless refused',
    async (_what, m, status, code, outcome) => {
      mode = m;
      const admin = await gw.adminToken();
      const response = await gw.call('/fhir/Observation', {
        method: 'POST',
        token: admin,
        json: { resourceType: 'Observation', status: 'final', code: { text: 'weight' } },
      });
      mode = 'pass';
      expect(response.status).toBe(status);
      const row = await gw.deps.db
        .selectFrom('audit_log')
        .select(['action', 'outcome', 'error_code', 'detail'])
        .where('request_id', '=', response.headers.get('x-request-id') ?? '')
        .where('action', '=', 'fhir.create')
        .executeTakeFirstOrThrow();
      expect(row).toMatchObject({ outcome: 'failed', error_code: code });
      const detail = (typeof row.detail === 'string' ? JSON.parse(row.detail) : row.detail) as object;
      if ('applied' in outcome) expect(detail).toMatchObject(outcome);
      else expect(detail).not.toHaveProperty('applied');
    },
  );
});
