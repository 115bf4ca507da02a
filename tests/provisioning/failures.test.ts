import type { Patient } from '@medplum/fhirtypes';
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { AppError } from '../../src/errors.js';
import { startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';
import { asServerFailure, upstreamStatusError, writeMayHaveLanded } from '../../src/fhir/upstreamStatus.js';
import { patientFromDto } from '../../src/provisioning/fhirMappers.js';
import type { CreatePatientInput } from '../../src/provisioning/provisioningSchemas.js';
import {
  accountIdentifierQuery,
  sentAccountIdentifierSystem,
} from '../../src/provisioning/provisioningService.js';
import { ManualClock } from '../helpers/clock.js';
import {
  type AnswerLoss,
  forward,
  startFailingProxy,
  startFakeUpstream,
  startHoldingProxy,
  startLosingProxy,
  unusedPort,
} from '../helpers/fakeUpstream.js';
import { startTestGateway, type TestGateway, tempDir, USER_PASSWORD } from '../helpers/gateway.js';
import { codeIn, mailsTo } from '../helpers/journey.js';
import { startPostgresProxy } from '../helpers/pgProxy.js';
import { createTestSchema, DIALECTS, TEST_DATABASE_URL } from '../helpers/postgres.js';
import { waitFor } from '../helpers/processes.js';
import { startSmtpCapture } from '../helpers/smtp.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function gateway(options: Parameters<typeof startTestGateway>[0]) {
  const gw = await startTestGateway(options);
  cleanups.push(() => gw.close());
  return gw;
}

async function smtpCapture(port?: number) {
  const smtp = await startSmtpCapture(port ? { port } : {});
  cleanups.push(() => smtp.close());
  return smtp;
}

const patientBody = (email: string) => ({ name: 'Fail Case', email, dob: '1990-01-01' });

async function createPatient(gw: TestGateway, email: string) {
  return gw.call('/fhir/patient', { method: 'POST', token: await gw.adminToken(), json: patientBody(email) });
}

/**
 * Waits until the outbox has delivered what the gateway wrote so far (the first admin's AuditEvent
 * among it): the FHIR server's numeric ids then move only with the test's own creates.
 */
async function outboxDelivered(gw: TestGateway): Promise<void> {
  gw.deps.outbox.wake();
  await waitFor('the outbox to deliver what the start wrote', async () => {
    const undelivered = await gw.deps.db
      .selectFrom('outbox')
      .select('id')
      .where('status', '!=', 'sent')
      .execute();
    return undelivered.length === 0;
  });
}

async function patientsWithEmail(gw: TestGateway, email: string) {
  const response = await gw.deps.fhir.search('Patient', new URLSearchParams({ email }));
  return response.body?.entry ?? [];
}

/** Makes the database refuse a user with this email: a real failure after the FHIR create. */
async function failUserInsertFor(gw: TestGateway, email: string) {
  if (gw.deps.dialect === 'sqlite') {
    await sql
      .raw(`create trigger fail_insert before insert on users when new.email = '${email}'
        begin select raise(abort, 'injected failure'); end`)
      .execute(gw.deps.db);
  } else {
    await sql
      .raw(`create function fail_insert() returns trigger language plpgsql as $$
        begin if new.email = '${email}' then raise exception 'injected failure'; end if; return new; end $$;
        create trigger fail_insert before insert on users for each row execute function fail_insert();`)
      .execute(gw.deps.db);
  }
}

const userCount = async (gw: TestGateway) =>
  Number(
    (
      await gw.deps.db
        .selectFrom('users')
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow()
    ).n,
  );

describe('provisioning when the FHIR server fails', () => {
  it('answers 502 when the FHIR server is down, and stores no user', async () => {
    const port = await unusedPort();
    const gw = await gateway({ env: { FHIR_BASE_URL: `http://127.0.0.1:${port}/fhir` } });
    const before = await userCount(gw);
    const response = await createPatient(gw, 'down@example.com');
    expect(response.status).toBe(502);
    const body = await response.text();
    expect(JSON.parse(body)).toMatchObject({ code: 'upstream_unavailable' });
    expect(body).not.toContain(String(port));
    expect(await userCount(gw)).toBe(before);
    // nothing can have been created: no reconciliation needed, a retry may go at once
    const intent = await gw.deps.db
      .selectFrom('provisioning_intents')
      .select('state')
      .executeTakeFirstOrThrow();
    expect(intent.state).toBe('abandoned');
  });

  it('answers 504 within the timeout when the FHIR server hangs, and stores no user', async () => {
    const hang = await startFakeUpstream(() => {});
    cleanups.push(() => hang.close());
    const gw = await gateway({ env: { FHIR_BASE_URL: `${hang.url}/fhir`, FHIR_TIMEOUT_MS: '500' } });
    const before = await userCount(gw);
    const started = Date.now();
    const response = await createPatient(gw, 'slow@example.com');
    expect(response.status).toBe(504);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(await userCount(gw)).toBe(before);
  });
});

/** What startFailingProxy's refusal says of the server's insides: never relayed. */
const UPSTREAM_INSIDES = /HAPI-0450|internal\.example/;

/** A FHIR server (the embedded engine) behind a proxy that refuses Patient creates with `status` while `refusing()`. */
async function refusingPatientCreates(status: number, refusing: () => boolean) {
  const engine = await startEmbeddedFhirServer({ dataDir: tempDir() });
  cleanups.push(() => engine.close());
  const proxy = await startFailingProxy(
    engine.baseUrl,
    (method, url) => refusing() && method === 'POST' && /\/Patient$/.test(url),
    status,
  );
  cleanups.push(() => proxy.close());
  return { FHIR_BASE_URL: `${proxy.url}${new URL(engine.baseUrl).pathname}` };
}

describe.each([400, 409, 422])('a FHIR server that refuses the create with %i', (status) => {
  it("answers the slim create 502 upstream_error (the resource is the gateway's, built from checked fields), stores nothing, and lets the key go", async () => {
    let refusing = true;
    const gw = await gateway({ env: await refusingPatientCreates(status, () => refusing) });
    const email = `refused-${status}@example.com`;
    const create = async () =>
      gw.call('/fhir/patient', {
        method: 'POST',
        token: await gw.adminToken(),
        json: patientBody(email),
        headers: { 'Idempotency-Key': `refused-${status}` },
      });
    const response = await create();
    expect(response.status).toBe(502);
    const text = await response.text();
    // not 400 validation_failed without errors[], nor a 409 a form would read as "the email is taken"
    expect(JSON.parse(text)).toMatchObject({ code: 'upstream_error' });
    expect(text).not.toMatch(UPSTREAM_INSIDES);
    expect(await userCount(gw)).toBe(1); // the admin only
    // a refusal created nothing: no reconciliation to wait for
    const intent = await gw.deps.db
      .selectFrom('provisioning_intents')
      .select(['state', 'last_error'])
      .where('email', '=', email)
      .executeTakeFirstOrThrow();
    expect(intent).toEqual({ state: 'abandoned', last_error: 'upstream_error' });
    await gw.deps.auditTrail.flush();
    const audit = await gw.deps.db
      .selectFrom('audit_log')
      .select(['outcome', 'error_code'])
      .where('action', '=', 'provisioning.create')
      .execute();
    expect(audit).toEqual([{ outcome: 'failed', error_code: 'upstream_error' }]);
    // the key was let go with the intent: once the server takes the record, the same retry creates it
    refusing = false;
    const retry = await create();
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBeNull();
  });

  it("keeps the raw FHIR create's status (the admin's own resource), as an OperationOutcome of ours", async () => {
    const gw = await gateway({ env: await refusingPatientCreates(status, () => true) });
    const response = await gw.call('/fhir/Patient', {
      method: 'POST',
      token: await gw.adminToken(),
      body: JSON.stringify({
        resourceType: 'Patient',
        name: [{ family: 'Raw' }],
        telecom: [{ system: 'email', value: `raw-refused-${status}@example.com` }],
      }),
      headers: { 'content-type': 'application/fhir+json' },
    });
    expect(response.status).toBe(status);
    const text = await response.text();
    expect(JSON.parse(text)).toMatchObject({ resourceType: 'OperationOutcome' });
    expect(text).not.toMatch(UPSTREAM_INSIDES);
    expect(await userCount(gw)).toBe(1);
  });
});

/**
 * A FHIR server (the embedded engine) behind a proxy that loses the answer to every Patient create
 * the server did (`reset`: the connection cut; `bad_gateway`: a 502 page): the env that points a
 * gateway at it.
 */
async function losingPatientCreates(loss: AnswerLoss) {
  const engine = await startEmbeddedFhirServer({ dataDir: tempDir() });
  cleanups.push(() => engine.close());
  const proxy = await startLosingProxy(
    engine.baseUrl,
    (method, url) => method === 'POST' && /\/Patient$/.test(url),
    loss,
  );
  cleanups.push(() => proxy.close());
  return { FHIR_BASE_URL: `${proxy.url}${new URL(engine.baseUrl).pathname}` };
}

// foreign_location and unreadable_id: the account would link to another record (review S1)
describe.each(['reset', 'bad_gateway', 'foreign_location', 'unreadable_id'] as const)(
  'a create the FHIR server did, whose answer was lost (%s)',
  (loss) => {
    it('answers 502, keeps the intent, and reconciliation completes the account: no unlisted resource', async () => {
      const smtp = await smtpCapture();
      const clock = new ManualClock();
      const gw = await gateway({ clock, env: { SMTP_URL: smtp.url, ...(await losingPatientCreates(loss)) } });
      const email = `lost-${loss}@example.com`;
      const response = await createPatient(gw, email);
      expect(response.status).toBe(502);
      expect(await userCount(gw)).toBe(1); // the admin only
      const intent = await gw.deps.db
        .selectFrom('provisioning_intents')
        .selectAll()
        .where('email', '=', email)
        .executeTakeFirstOrThrow();
      expect(intent.state).toBe('pending');
      // once its lease lapsed, reconciliation finds the resource the lost answer hid
      clock.advance(60_000);
      const { reconcileLapsed } = await import('../../src/provisioning/reconciliation.js');
      expect(await reconcileLapsed(gw.deps, gw.deps.logger)).toMatchObject({ done: 1 });
      const [created] = await patientsWithEmail(gw, email);
      const user = await gw.deps.db
        .selectFrom('users')
        .selectAll()
        .where('email', '=', email)
        .executeTakeFirstOrThrow();
      expect(user.fhir_resource_id).toBe(created?.resource?.id);
      await smtp.waitFor(1);
    });
  },
);

describe('a create whose answer was lost, looked for on a server that answers oddly', () => {
  it("settles the intent without a TypeError when a found resource's identifier is not a list", async () => {
    const engine = await startEmbeddedFhirServer({ dataDir: tempDir() });
    cleanups.push(() => engine.close());
    const target = new URL(engine.baseUrl);
    const proxy = await startFakeUpstream((req, res) => {
      // the create's answer is lost (nothing was created), and the look for it finds an odd record
      if (req.method === 'POST' && /\/Patient$/.test(req.url)) return void res.socket?.destroy();
      if (req.method === 'GET' && /\/Patient\?identifier=/.test(req.url)) {
        const odd = { resourceType: 'Patient', id: 'odd', identifier: { value: 'odd@example.com' } };
        res
          .writeHead(200, { 'content-type': 'application/fhir+json' })
          .end(JSON.stringify({ resourceType: 'Bundle', type: 'searchset', entry: [{ resource: odd }] }));
        return;
      }
      forward(target, req, res);
    });
    cleanups.push(() => proxy.close());
    const clock = new ManualClock();
    const gw = await gateway({ clock, env: { FHIR_BASE_URL: `${proxy.url}${target.pathname}` } });
    const email = 'odd@example.com';
    expect((await createPatient(gw, email)).status).toBe(502);
    clock.advance(60_000);
    const { reconcileLapsed } = await import('../../src/provisioning/reconciliation.js');
    await reconcileLapsed(gw.deps, gw.deps.logger);
    const intent = await gw.deps.db
      .selectFrom('provisioning_intents')
      .select('state')
      .where('email', '=', email)
      .executeTakeFirstOrThrow();
    // nothing carries the account identifier: nothing to link, the intent no longer pending
    expect(intent.state).not.toBe('pending');
    expect(await userCount(gw)).toBe(1);
  });
});

// a server matching If-None-Exist loosely (or ignoring it) answers 200 with someone else's record:
// linked, the new account read that person's data (helper review)
describe("a conditional create answered with a record that is not the account's", () => {
  it.each([
    ['in its body', true],
    ['by its Location alone', false],
  ])('is a 502 that links no account to it (%s)', async (_how, withBody) => {
    const engine = await startEmbeddedFhirServer({ dataDir: tempDir() });
    cleanups.push(() => engine.close());
    const target = new URL(engine.baseUrl);
    const someoneElse = await fetch(`${engine.baseUrl}/Patient`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Else', given: ['Someone'] }] }),
    }).then((r) => r.json() as Promise<{ id: string }>);
    const proxy: { url: string; close(): Promise<void> } = await startFakeUpstream((req, res) => {
      if (req.method === 'POST' && /\/Patient$/.test(req.url)) {
        const location = `${proxy.url}${target.pathname}/Patient/${someoneElse.id}/_history/1`;
        res.writeHead(200, { 'content-type': 'application/fhir+json', location });
        res.end(withBody ? JSON.stringify({ ...someoneElse, resourceType: 'Patient' }) : undefined);
        return;
      }
      forward(target, req, res);
    });
    cleanups.push(() => proxy.close());
    const gw = await gateway({ env: { FHIR_BASE_URL: `${proxy.url}${target.pathname}` } });
    const email = `loose-${withBody}@example.com`;
    const answer = await createPatient(gw, email);
    expect(answer.status, await answer.clone().text()).toBe(502);
    expect(await answer.text()).not.toContain(someoneElse.id);
    const linked = await gw.deps.db
      .selectFrom('users')
      .select('id')
      .where('fhir_resource_id', '=', someoneElse.id)
      .execute();
    expect(linked).toEqual([]);
    expect(await userCount(gw)).toBe(1); // the admin alone
  });
});

// the read of the named Practitioner is the gateway's, built from a checked id: the server's
// refusal of it is no mistake of the admin's (it was a 400 "The FHIR server refused the request")
describe('a create naming a practitioner, whose read the FHIR server refuses', () => {
  it.each([400, 405])('is a 502 when that read answers %i, and makes nothing', async (status) => {
    const engine = await startEmbeddedFhirServer({ dataDir: tempDir() });
    cleanups.push(() => engine.close());
    const target = new URL(engine.baseUrl);
    const proxy = await startFakeUpstream((req, res) => {
      if (req.method === 'GET' && /\/Practitioner\/[^/?]+$/.test(req.url)) {
        res.writeHead(status, { 'content-type': 'application/fhir+json' });
        res.end(
          JSON.stringify({
            resourceType: 'OperationOutcome',
            issue: [{ severity: 'error', code: 'invalid' }],
          }),
        );
        return;
      }
      forward(target, req, res);
    });
    cleanups.push(() => proxy.close());
    const gw = await gateway({ env: { FHIR_BASE_URL: `${proxy.url}${target.pathname}` } });
    const email = `gp-refused-${status}@example.com`;
    const answer = await gw.call('/fhir/patient', {
      method: 'POST',
      token: await gw.adminToken(),
      json: { ...patientBody(email), general_practitioner_id: 'some-gp' },
    });
    expect(answer.status, await answer.clone().text()).toBe(502);
    expect(await userCount(gw)).toBe(1);
    expect(await patientsWithEmail(gw, email)).toHaveLength(0);
  });
});

// two creates of one email on a server whose conditional create is not atomic: the winner links R1,
// the loser made R2 and was killed before undoing it (helper review: both were listed, R1 too)
describe('an intent whose email has several records, one linked by its account', () => {
  it('removes the records no account links and lists none', async () => {
    const clock = new ManualClock();
    const gw = await gateway({ clock });
    const email = 'raced-twice@example.com';
    const created = await createPatient(gw, email);
    expect(created.status).toBe(201);
    const linked = ((await created.json()) as { fhir_id: string }).fhir_id;
    const [system, value] = accountIdentifierQuery(gw.deps.config.publicBaseUrl, email).split('|');
    const sent = patientFromDto(patientBody(email) as CreatePatientInput, email);
    const stray = await gw.deps.fhir.create('Patient', { ...sent, identifier: [{ system, value }] });
    const past = new Date(clock.now().getTime() - 60_000).toISOString();
    await gw.deps.db
      .insertInto('provisioning_intents')
      .values(
        intentRow({
          id: 'intent-raced',
          actor: await adminId(gw),
          key: 'k-raced',
          email,
          displayName: 'Fail Case',
          state: 'pending',
          leaseUntil: past,
          at: past,
        }),
      )
      .execute();
    expect(await reconciledIntent(gw, 'intent-raced')).toBe('abandoned');
    expect((await patientsWithEmail(gw, email)).map((e) => e.resource?.id)).toEqual([linked]);
    const listed = (await (
      await gw.call('/admin/provisioning/orphans', { token: await gw.adminToken() })
    ).json()) as {
      orphans: unknown[];
    };
    expect(listed.orphans).toEqual([]);
    expect(stray.id).not.toBe(linked);
  });
});

describe('a create left open, then a restart with another PUBLIC_BASE_URL', () => {
  it('is still found and completed by reconciliation: no lost resource, a retry makes no duplicate', async () => {
    const dataDir = tempDir();
    const clock = new ManualClock();
    const env = await losingPatientCreates('reset');
    const before = await startTestGateway({
      dataDir,
      clock,
      env: { ...env, PUBLIC_BASE_URL: 'http://old.test' },
    });
    const email = 'moved-base-url@example.com';
    expect((await createPatient(before, email)).status).toBe(502);
    await before.close();

    const after = await gateway({ dataDir, clock, env: { ...env, PUBLIC_BASE_URL: 'https://new.example' } });
    clock.advance(60_000);
    const { reconcileLapsed } = await import('../../src/provisioning/reconciliation.js');
    expect(await reconcileLapsed(after.deps, after.deps.logger)).toMatchObject({ done: 1 });
    const [created] = await patientsWithEmail(after, email);
    const user = await after.deps.db
      .selectFrom('users')
      .selectAll()
      .where('email', '=', email)
      .executeTakeFirstOrThrow();
    expect(user.fhir_resource_id).toBe(created?.resource?.id);
    // the admin's retry meets the account, not a second Patient
    expect((await createPatient(after, email)).status).toBe(409);
    expect(await patientsWithEmail(after, email)).toHaveLength(1);
  });
});

it.each([
  ['a timeout', new AppError('upstream_timeout'), true],
  ['a 5xx or an unreadable success', new AppError('upstream_error'), true],
  [
    'a connection lost after the request went out',
    new AppError('upstream_unavailable', {
      cause: Object.assign(new Error('reset'), { code: 'ECONNRESET' }),
    }),
    true,
  ],
  [
    'a connection never made',
    new AppError('upstream_unavailable', {
      cause: Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }),
    }),
    false,
  ],
  [
    'a call our own shutdown ended (it may have been sent)',
    new AppError('not_ready', {
      cause: Object.assign(new Error('destroyed'), { code: 'UND_ERR_DESTROYED' }),
    }),
    true,
  ],
  ['a 400', new AppError('validation_failed'), false],
  ['a 412', new AppError('duplicate_identifier'), false],
  ['a 422', new AppError('unprocessable'), false],
  [
    "a 422 answered as the server's failure (a slim create)",
    asServerFailure(upstreamStatusError(422, 'other', { method: 'POST' })),
    false,
  ],
  [
    "a 503 from the FHIR server (often a proxy's, after the server committed)",
    upstreamStatusError(503),
    true,
  ],
  ['a bug of ours', new Error('a bug of ours'), true],
] as const)('a create that failed with %s may have landed: %s', (_what, error, landed) => {
  expect(writeMayHaveLanded(error)).toBe(landed);
});

describe.each(DIALECTS)('provisioning when storing the user fails (%s)', (dialect) => {
  it('deletes the FHIR resource again and answers 503 storage_unavailable', async () => {
    const gw = await gateway({ dialect });
    const email = 'insert-fails@example.com';
    await failUserInsertFor(gw, email);
    const response = await createPatient(gw, email);
    expect(response.status).toBe(503);
    expect(await response.json()).toMatchObject({ code: 'storage_unavailable' });
    expect(await patientsWithEmail(gw, email)).toHaveLength(0);
    const audit = await gw.deps.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'provisioning.compensate')
      .execute();
    expect(audit).toHaveLength(1);
    // the failed create is recorded once, not once more as a refusal
    await gw.deps.auditTrail.flush();
    const failures = await gw.deps.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'provisioning.create')
      .where('request_id', '=', response.headers.get('x-request-id') ?? '')
      .execute();
    expect(failures).toEqual([
      expect.objectContaining({ outcome: 'failed', error_code: 'storage_unavailable' }),
    ]);
    const mails = await gw.deps.db.selectFrom('outbox').selectAll().where('kind', '=', 'email').execute();
    expect(mails).toHaveLength(0);
  });

  it('records an orphan, audited and listed for admins, when the compensating delete fails too', async () => {
    const fhir = await startEmbeddedFhirServer({ dataDir: tempDir() });
    cleanups.push(() => fhir.close());
    const proxy = await startFailingProxy(fhir.baseUrl, (method) => method === 'DELETE');
    cleanups.push(() => proxy.close());
    const gw = await gateway({ dialect, env: { FHIR_BASE_URL: `${proxy.url}/fhir/R4` } });
    const email = 'orphan@example.com';
    await failUserInsertFor(gw, email);
    const response = await createPatient(gw, email);
    expect(response.status).toBe(503);
    // not "nothing was created": the record stays, listed
    expect(((await response.json()) as { detail: string }).detail).toMatch(/listed for an administrator/);
    const [entry] = await patientsWithEmail(gw, email);
    expect(entry?.resource?.id).toBeDefined();
    const listed = await gw.call('/admin/provisioning/orphans', { token: await gw.adminToken() });
    const { orphans } = (await listed.json()) as {
      orphans: { fhir_type: string; fhir_id: string; reason: string }[];
    };
    expect(orphans).toEqual([
      expect.objectContaining({
        fhir_type: 'Patient',
        fhir_id: entry!.resource!.id,
        reason: 'user_insert_failed',
      }),
    ]);
    const audit = await gw.deps.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'provisioning.orphan')
      .execute();
    expect(audit).toEqual([
      expect.objectContaining({ outcome: 'failed', target_fhir_id: entry!.resource!.id }),
    ]);
  });
});

describe.each(DIALECTS)('two creates of one email racing without an Idempotency-Key (%s)', (dialect) => {
  it("keeps the FHIR resource the winner's account links to when the slower create loses on the email", async () => {
    const fhir = await startEmbeddedFhirServer({ dataDir: tempDir() });
    cleanups.push(() => fhir.close());
    // the first create reaches the FHIR server, but its answer arrives after the retry has finished
    const proxy = await startHoldingProxy(
      fhir.baseUrl,
      (method, url) => method === 'POST' && /\/Patient(\?|$)/.test(url),
    );
    cleanups.push(() => proxy.close());
    const gw = await gateway({ dialect, env: { FHIR_BASE_URL: `${proxy.url}/fhir/R4` } });
    const email = `race-${dialect}@example.com`;
    const slow = createPatient(gw, email);
    await proxy.answered;
    // the admin's retry, e.g. after a client-side timeout: its conditional create finds the slow one's Patient
    const retry = await createPatient(gw, email);
    expect(retry.status).toBe(201);
    const { fhir_id, user_id } = (await retry.json()) as { fhir_id: string; user_id: string };
    proxy.release();
    const lost = await slow;
    expect(lost.status).toBe(409);
    expect(await lost.json()).toMatchObject({ code: 'conflict' });

    const user = await gw.deps.db
      .selectFrom('users')
      .selectAll()
      .where('email', '=', email)
      .executeTakeFirstOrThrow();
    expect(user).toMatchObject({ id: user_id, fhir_resource_id: fhir_id });
    expect((await gw.deps.fhir.read('Patient', fhir_id)).body?.id).toBe(fhir_id);
    expect(await patientsWithEmail(gw, email)).toHaveLength(1);
    const compensations = await gw.deps.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', 'in', ['provisioning.compensate', 'provisioning.orphan'])
      .execute();
    expect(compensations).toHaveLength(0);
    const intents = await gw.deps.db
      .selectFrom('provisioning_intents')
      .select(['state', 'last_error'])
      .where('email', '=', email)
      .orderBy('created_at')
      .execute();
    expect(intents).toEqual([
      { state: 'abandoned', last_error: 'email_taken' },
      { state: 'done', last_error: null },
    ]);
  });
});

describe.each(DIALECTS)('a FHIR server that hands out an id another account links to (%s)', (dialect) => {
  it('answers 502, removes the new record, stores nothing, leaves the other account as it was, and a retry works', async () => {
    // HAPI-style numeric ids, one counter for every type: the next id is the one after a probe's.
    // An account whose record the server lost (a reset, a restore from an older backup) holds it
    const gw = await gateway({ dialect, upstream: 'hapi' });
    // the admin's first login writes an AuditEvent too: logged in before the outbox is emptied
    await gw.adminToken();
    await outboxDelivered(gw);
    const probe = await gw.deps.fhir.create('Organization', { resourceType: 'Organization', name: 'probe' });
    const nextId = String(Number(probe.id) + 1);
    const earlier = await gw.seedUser({ role: 'patient', fhirId: nextId });
    const email = 'reused-id@example.com';
    const response = await createPatient(gw, email);
    expect(response.status).toBe(502);
    const body = (await response.json()) as { code: string; detail: string };
    expect(body.code).toBe('upstream_error');
    expect(body.detail).toMatch(/another account links to .* removed and nothing was stored/);
    expect(await patientsWithEmail(gw, email)).toHaveLength(0);
    const users = gw.deps.db.selectFrom('users').select(['email', 'fhir_resource_id']);
    expect(await users.where('email', '=', email).execute()).toEqual([]);
    expect(await users.where('id', '=', earlier.id).execute()).toEqual([
      { email: earlier.email, fhir_resource_id: nextId },
    ]);
    const intent = await gw.deps.db
      .selectFrom('provisioning_intents')
      .select(['state', 'last_error'])
      .where('email', '=', email)
      .executeTakeFirstOrThrow();
    expect(intent).toEqual({ state: 'abandoned', last_error: 'fhir_id_reused' });
    await gw.deps.auditTrail.flush();
    const audit = await gw.deps.db
      .selectFrom('audit_log')
      .select(['action', 'outcome', 'error_code'])
      .where('action', 'in', ['provisioning.create', 'provisioning.compensate'])
      .where('target_fhir_type', '=', 'Patient')
      .orderBy('action')
      .execute();
    expect(audit).toEqual([
      { action: 'provisioning.compensate', outcome: 'success', error_code: null },
      { action: 'provisioning.create', outcome: 'failed', error_code: 'upstream_error' },
    ]);
    // the removed id is not handed out again: the retry gets a record, and an account, of its own
    const retry = await createPatient(gw, email);
    expect(retry.status).toBe(201);
    expect(((await retry.json()) as { fhir_id: string }).fhir_id).not.toBe(nextId);
  });
});

describe.each(DIALECTS)(
  'reconciling a crashed create whose record got an id another account links to (%s)',
  (dialect) => {
    it('removes the record and abandons the intent, instead of failing on the unique index for good', async () => {
      const clock = new ManualClock();
      const gw = await gateway({ dialect, clock, upstream: 'hapi' });
      await outboxDelivered(gw);
      const admin = await adminId(gw);
      const email = `reused-crash-${dialect}@example.com`;
      const past = new Date(clock.now().getTime() - 60_000).toISOString();
      await gw.deps.db
        .insertInto('provisioning_intents')
        .values(
          intentRow({
            id: 'intent-reused',
            actor: admin,
            key: 'k-reused',
            email,
            displayName: 'Re Used',
            state: 'pending',
            leaseUntil: past,
            at: past,
          }),
        )
        .execute();
      // the crashed request's create landed, on an id the FHIR server had given before (and lost)
      const probe = await gw.deps.fhir.create('Organization', {
        resourceType: 'Organization',
        name: 'probe',
      });
      const earlier = await gw.seedUser({ role: 'patient', fhirId: String(Number(probe.id) + 1) });
      const [system, value] = accountIdentifierQuery(gw.deps.config.publicBaseUrl, email).split('|');
      const landed = await gw.deps.fhir.create('Patient', {
        resourceType: 'Patient',
        name: [{ family: 'Used', given: ['Re'] }],
        identifier: [{ system, value }],
        telecom: [{ system: 'email', value: email }],
      });
      expect(landed.id).toBe(String(Number(probe.id) + 1));
      expect(await reconciledIntent(gw, 'intent-reused')).toBe('abandoned');
      expect(await patientsWithEmail(gw, email)).toHaveLength(0);
      const intent = await gw.deps.db
        .selectFrom('provisioning_intents')
        .select(['state', 'last_error'])
        .where('id', '=', 'intent-reused')
        .executeTakeFirstOrThrow();
      expect(intent).toEqual({ state: 'abandoned', last_error: 'fhir_id_reused' });
      const users = gw.deps.db.selectFrom('users').select(['email', 'fhir_resource_id']);
      expect(await users.where('email', '=', email).execute()).toEqual([]);
      expect(await users.where('id', '=', earlier.id).execute()).toEqual([
        { email: earlier.email, fhir_resource_id: landed.id },
      ]);
    });
  },
);

/** A gateway on PostgreSQL behind a TCP proxy that can lose the acknowledgement of a COMMIT. */
async function gatewayBehindPostgresProxy(env: Record<string, string> = {}) {
  const schema = await createTestSchema();
  const proxy = await startPostgresProxy(schema.url);
  cleanups.push(() => proxy.close());
  const gw = await gateway({ env: { DATABASE_URL: proxy.via(schema.url), ...env } });
  return { gw, proxy };
}

const ACCOUNT_INSERT = 'insert into "users" (';

describe.skipIf(!TEST_DATABASE_URL)(
  'a create whose COMMIT the database did but whose answer was lost',
  () => {
    it('answers 201 for the account it stored, keeps its FHIR resource and sends its mail', async () => {
      const smtp = await smtpCapture();
      const { gw, proxy } = await gatewayBehindPostgresProxy({ SMTP_URL: smtp.url });
      const email = 'commit-ack-lost@example.com';
      const cut = proxy.loseCommitAck(ACCOUNT_INSERT);
      const response = await createPatient(gw, email);
      await cut;
      expect(response.status).toBe(201);
      const { fhir_id, user_id } = (await response.json()) as { fhir_id: string; user_id: string };
      const user = await gw.deps.db
        .selectFrom('users')
        .selectAll()
        .where('email', '=', email)
        .executeTakeFirstOrThrow();
      expect(user).toMatchObject({ id: user_id, fhir_resource_id: fhir_id });
      expect((await gw.deps.fhir.read('Patient', fhir_id)).body?.id).toBe(fhir_id);
      const compensations = await gw.deps.db
        .selectFrom('audit_log')
        .selectAll()
        .where('action', 'in', ['provisioning.compensate', 'provisioning.orphan'])
        .execute();
      expect(compensations).toHaveLength(0);
      await smtp.waitFor(1);
    });

    it('answers 201 when the COMMIT outlives the statement budget but lands, and never deletes the resource first', async () => {
      const { gw } = await gatewayBehindPostgresProxy({ DATABASE_QUERY_TIMEOUT_MS: '3000' });
      const email = 'slow-commit@example.com';
      // a COMMIT that takes 4 s and then succeeds (a slow fsync, a lagging synchronous standby): the
      // gateway gives up on it after 3 s, and must not take "not committed yet" for "not committed"
      await sql
        .raw(`create function slow_commit() returns trigger language plpgsql as $$
        begin if new.email = '${email}' then perform pg_sleep(4); end if; return new; end $$;
        create constraint trigger slow_commit after insert on users deferrable initially deferred
        for each row execute function slow_commit();`)
        .execute(gw.deps.db);
      const response = await createPatient(gw, email);
      expect(response.status).toBe(201);
      const { fhir_id } = (await response.json()) as { fhir_id: string };
      expect((await gw.deps.fhir.read('Patient', fhir_id)).body?.id).toBe(fhir_id);
      const user = await gw.deps.db
        .selectFrom('users')
        .select('fhir_resource_id')
        .where('email', '=', email)
        .executeTakeFirstOrThrow();
      expect(user.fhir_resource_id).toBe(fhir_id);
    });

    it('answers a signup whose COMMIT landed but whose answer was lost 201, with tokens that work', async () => {
      const smtp = await smtpCapture();
      const { gw, proxy } = await gatewayBehindPostgresProxy({ SMTP_URL: smtp.url });
      const email = 'signup-ack-lost@example.com';
      expect((await createPatient(gw, email)).status).toBe(201);
      const [mail] = await mailsTo(smtp, email);
      const cut = proxy.loseCommitAck('update "users" set "password_hash"');
      // its code is spent once the signup is stored: a retry would be refused, so this answer must be the one
      const response = await gw.call('/auth/signup', {
        method: 'POST',
        json: { email, access_code: codeIn(mail!), password: USER_PASSWORD },
      });
      await cut;
      expect(response.status).toBe(201);
      const { token } = (await response.json()) as { token: string };
      expect((await gw.call('/auth/me', { token })).status).toBe(200);
    });

    it('when the database is gone too, answers 503 at once and keeps the FHIR resource the account links to', async () => {
      const { gw, proxy } = await gatewayBehindPostgresProxy();
      const email = 'commit-ack-lost-down@example.com';
      const token = await gw.adminToken();
      const cut = proxy.loseCommitAck(ACCOUNT_INSERT, { thenDown: true });
      const started = Date.now();
      const response = await gw.call('/fhir/patient', { method: 'POST', token, json: patientBody(email) });
      await cut;
      expect(response.status).toBe(503);
      expect(Date.now() - started).toBeLessThan(5_000);
      const body = (await response.json()) as { code: string; detail: string };
      expect(body.code).toBe('storage_unavailable');
      expect(body.detail).not.toMatch(/nothing was created/);
      // the FHIR server is not behind the proxy: the resource must still be there
      const [entry] = await patientsWithEmail(gw, email);
      expect(entry?.resource?.id).toBeDefined();
      proxy.restore();
      const user = await gw.deps.db
        .selectFrom('users')
        .selectAll()
        .where('email', '=', email)
        .executeTakeFirstOrThrow();
      expect(user.fhir_resource_id).toBe(entry!.resource!.id);
    });
  },
);

describe('access-code mail when SMTP fails', () => {
  async function smtpDownGateway(smtpPort: number, extra: { dataDir?: string; clock?: ManualClock } = {}) {
    return gateway({ env: { SMTP_URL: `smtp://127.0.0.1:${smtpPort}` }, ...extra });
  }

  async function pendingMails(gw: TestGateway) {
    return gw.deps.db
      .selectFrom('outbox')
      .selectAll()
      .where('kind', '=', 'email')
      .where('status', '!=', 'sent')
      .execute();
  }

  it('answers 201 while SMTP is down and delivers the mail exactly once when SMTP is back', async () => {
    const port = await unusedPort();
    const clock = new ManualClock();
    const gw = await smtpDownGateway(port, { clock });
    expect((await createPatient(gw, 'smtp-down@example.com')).status).toBe(201);
    gw.deps.outbox.wake();
    for (let i = 0; i < 50; i++) {
      const [row] = await pendingMails(gw);
      if (row && row.attempts > 0 && row.status === 'pending') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const [pending] = await pendingMails(gw);
    expect(pending).toMatchObject({ status: 'pending', attempts: 1 });
    expect(pending!.last_error).not.toMatch(/[0-9A-Z]{4}-[0-9A-Z]{4}/);

    const smtp = await smtpCapture(port);
    clock.advance(10 * 60_000);
    gw.deps.outbox.wake();
    const [mail] = await smtp.waitFor(1);
    expect(mail!.subject).toMatch(/Your Access Code to Register on/);
    clock.advance(60 * 60_000);
    gw.deps.outbox.wake();
    await new Promise((r) => setTimeout(r, 300));
    expect(smtp.messages).toHaveLength(1);
    expect(await pendingMails(gw)).toHaveLength(0);
  });

  it('delivers mail left unsent by a stopped process after the restart, exactly once', async () => {
    const port = await unusedPort();
    const dataDir = tempDir();
    const first = await startTestGateway({ env: { SMTP_URL: `smtp://127.0.0.1:${port}` }, dataDir });
    expect((await createPatient(first, 'restart@example.com')).status).toBe(201);
    await first.close();

    const smtp = await smtpCapture(port);
    const clock = new ManualClock();
    clock.advance(10 * 60_000);
    const second = await smtpDownGateway(port, { dataDir, clock });
    second.deps.outbox.wake();
    const [mail] = await smtp.waitFor(1);
    expect(mail!.to && JSON.stringify(mail!.to)).toContain('restart@example.com');
    await new Promise((r) => setTimeout(r, 300));
    expect(smtp.messages).toHaveLength(1);
  });
});

describe('a create a crash left open while the FHIR server cannot answer', () => {
  it('is listed under unfinished_creates at /admin/provisioning/orphans, never silently', async () => {
    const port = await unusedPort();
    const gw = await gateway({
      env: { FHIR_BASE_URL: `http://127.0.0.1:${port}/fhir`, FHIR_TIMEOUT_MS: '500' },
    });
    const admin = await gw.adminToken();
    const actor = await gw.deps.db
      .selectFrom('users')
      .select('id')
      .where('role', '=', 'admin')
      .executeTakeFirstOrThrow();
    const long = new Date(Date.now() - 60_000).toISOString();
    await gw.deps.db
      .insertInto('provisioning_intents')
      .values({
        id: 'intent-left-open',
        actor_user_id: actor.id,
        idempotency_key: null,
        fhir_type: 'Patient',
        email: 'left-open@example.com',
        display_name: 'Left Open',
        resource: '{"resourceType":"Patient"}',
        response_kind: 'slim',
        state: 'pending',
        fhir_id: null,
        user_id: null,
        lease_until: long,
        attempts: 1,
        last_error: null,
        request_id: 'req-left-open',
        client_ip: null,
        created_at: long,
        updated_at: long,
      })
      .execute();
    const listed = await gw.call('/admin/provisioning/orphans', { token: admin });
    const body = (await listed.json()) as { unfinished_creates: { intent_id: string; request_id: string }[] };
    expect(listed.status).toBe(200);
    expect(body.unfinished_creates).toEqual([
      expect.objectContaining({
        intent_id: 'intent-left-open',
        fhir_type: 'Patient',
        request_id: 'req-left-open',
      }),
    ]);
  });
});

/**
 * Reconciles the lapsed intent `id` and answers how it settled. The gateway's own reconciler round
 * (at start-up and every 10 s) may have claimed it first ('held'): its settlement is awaited, which
 * must come to the same.
 */
async function reconciledIntent(gw: TestGateway, id: string): Promise<string> {
  const { reconcileIntent } = await import('../../src/provisioning/reconciliation.js');
  return waitFor(`intent ${id} to settle`, async () => {
    const settlement = await reconcileIntent(gw.deps, id);
    return settlement === 'held' ? undefined : settlement;
  });
}

/** The first admin's id: the actor of the intents and keys the reconciliation tests write by hand. */
async function adminId(gw: TestGateway): Promise<string> {
  const admin = await gw.deps.db
    .selectFrom('users')
    .select('id')
    .where('role', '=', 'admin')
    .executeTakeFirstOrThrow();
  return admin.id;
}

/** A provisioning intent row as a crashed or a live request leaves it (nothing created upstream). */
function intentRow(fields: {
  id: string;
  actor: string;
  key: string;
  email: string;
  displayName: string;
  state: 'pending' | 'abandoned';
  leaseUntil: string;
  at: string;
}) {
  return {
    id: fields.id,
    actor_user_id: fields.actor,
    idempotency_key: fields.key,
    fhir_type: 'Patient' as const,
    email: fields.email,
    display_name: fields.displayName,
    resource: '{"resourceType":"Patient"}',
    response_kind: 'slim' as const,
    state: fields.state,
    fhir_id: null,
    user_id: null,
    lease_until: fields.leaseUntil,
    attempts: 1,
    last_error: fields.state === 'abandoned' ? 'not_created' : null,
    request_id: `req-${fields.id}`,
    client_ip: null,
    created_at: fields.at,
    updated_at: fields.at,
  };
}

/** An idempotency key a request holds in progress, linked to `intentId`. */
function keyRow(fields: { actor: string; key: string; intentId: string; lockedUntil: string; at: string }) {
  return {
    actor_user_id: fields.actor,
    key: fields.key,
    route: 'POST /fhir/patient',
    request_hash: 'h',
    state: 'in_progress' as const,
    response_status: null,
    response_body: null,
    response_headers: null,
    created_at: fields.at,
    expires_at: new Date(Date.now() + 3_600_000).toISOString(),
    locked_until: fields.lockedUntil,
    intent_id: fields.intentId,
  };
}

describe.each(DIALECTS)('an old intent settled while a retry works under the same key (%s)', (dialect) => {
  it('leaves the key to the newer intent a retry linked to it, and releases a key that is its own', async () => {
    const gw = await gateway({ dialect });
    const actor = await adminId(gw);
    const key = 'race-key-1';
    const email = `race-${dialect}@example.com`;
    const long = new Date(Date.now() - 60_000).toISOString();
    const intent = (id: string) =>
      intentRow({
        id,
        actor,
        key,
        email,
        displayName: 'Race Condition',
        state: 'pending',
        leaseUntil: long,
        at: long,
      });
    // a crashed request's intent (nothing reached the FHIR server), and the key a retry took over
    // since and linked to its own, newer intent
    await gw.deps.db.insertInto('provisioning_intents').values(intent('intent-crashed')).execute();
    await gw.deps.db
      .insertInto('idempotency_keys')
      .values(
        keyRow({
          actor,
          key,
          intentId: 'intent-retry',
          lockedUntil: new Date(Date.now() + 6_000).toISOString(),
          at: long,
        }),
      )
      .execute();
    // reconciliation settles the crashed intent as abandoned: the retry's key must stay
    expect(await reconciledIntent(gw, 'intent-crashed')).toBe('abandoned');
    const row = await gw.deps.db
      .selectFrom('idempotency_keys')
      .select(['state', 'intent_id'])
      .where('key', '=', key)
      .executeTakeFirst();
    expect(row).toEqual({ state: 'in_progress', intent_id: 'intent-retry' });
    // the crashed intent's own key (linked to it) is released as before
    await gw.deps.db.updateTable('idempotency_keys').set({ intent_id: 'intent-crashed-2' }).execute();
    await gw.deps.db.insertInto('provisioning_intents').values(intent('intent-crashed-2')).execute();
    expect(await reconciledIntent(gw, 'intent-crashed-2')).toBe('abandoned');
    expect(
      await gw.deps.db.selectFrom('idempotency_keys').select('key').where('key', '=', key).executeTakeFirst(),
    ).toBeUndefined();
  });
});

describe.each(DIALECTS)('a key left behind an intent that was settled already (%s)', (dialect) => {
  it('is freed when a retry looks at the intent, while a key behind a live intent stays', async () => {
    const gw = await gateway({ dialect });
    const actor = await adminId(gw);
    const long = new Date(Date.now() - 60_000).toISOString();
    const soon = new Date(Date.now() + 6_000).toISOString();
    const intent = (id: string, state: 'pending' | 'abandoned', leaseUntil: string) =>
      intentRow({
        id,
        actor,
        key: `key-${id}`,
        email: `${id}-${dialect}@example.com`,
        displayName: 'Left Behind',
        state,
        leaseUntil,
        at: long,
      });
    const key = (id: string) =>
      keyRow({ actor, key: `key-${id}`, intentId: id, lockedUntil: long, at: long });
    // a crash between settling the intent (nothing created) and freeing its key; and an intent a live request holds
    await gw.deps.db
      .insertInto('provisioning_intents')
      .values([intent('settled', 'abandoned', long), intent('live', 'pending', soon)])
      .execute();
    await gw.deps.db
      .insertInto('idempotency_keys')
      .values([key('settled'), key('live')])
      .execute();
    const { reconcileIntent } = await import('../../src/provisioning/reconciliation.js');
    expect(await reconcileIntent(gw.deps, 'settled')).toBe('abandoned');
    expect(await reconcileIntent(gw.deps, 'live')).toBe('held');
    const keys = await gw.deps.db.selectFrom('idempotency_keys').select(['key', 'state']).execute();
    expect(keys).toEqual([{ key: 'key-live', state: 'in_progress' }]);
  });
});

describe.each(DIALECTS)('a create that lands after reconciliation found nothing (%s)', (dialect) => {
  /**
   * Runs the late look of `id`, and answers its outcome from the row: the gateway's own reconciler
   * (every 10 s) may have taken the look first, which must come to the same.
   */
  async function lookedLate(gw: TestGateway, id: string): Promise<string | null> {
    const { lookLate } = await import('../../src/provisioning/reconciliation.js');
    await lookLate(gw.deps, id);
    let lastError: string | null = null;
    await waitFor('the late look to end', async () => {
      const row = await gw.deps.db
        .selectFrom('provisioning_intents')
        .select('last_error')
        .where('id', '=', id)
        .executeTakeFirstOrThrow();
      lastError = row.last_error;
      return lastError !== 'late_look';
    });
    return lastError;
  }

  it('is listed as an orphan by the late look, and resolved when the next create links it', async () => {
    const clock = new ManualClock();
    const smtp = await smtpCapture();
    const gw = await gateway({ dialect, clock, env: { SMTP_URL: smtp.url } });
    const admin = await adminId(gw);
    const email = `late-${dialect}@example.com`;
    const past = new Date(clock.now().getTime() - 60_000).toISOString();
    await gw.deps.db
      .insertInto('provisioning_intents')
      .values(
        intentRow({
          id: 'intent-late',
          actor: admin,
          key: 'k-late',
          email,
          displayName: 'Late Lee',
          state: 'pending',
          leaseUntil: past,
          at: past,
        }),
      )
      .execute();
    const { LATE_LOOK_AFTER_MS } = await import('../../src/provisioning/reconciliation.js');
    expect(await reconciledIntent(gw, 'intent-late')).toBe('abandoned');
    // the slow server commits the create it took before the request gave up
    const [system, value] = accountIdentifierQuery(gw.deps.config.publicBaseUrl, email).split('|');
    // what the admin's create sent (the intent's resource), with the account identifier
    const sent = patientFromDto(patientBody(email) as CreatePatientInput, email);
    const late = await gw.deps.fhir.create('Patient', { ...sent, identifier: [{ system, value }] });
    expect(await lookedLate(gw, 'intent-late')).toBe('not_created'); // not due yet
    clock.advance(gw.deps.config.fhir.timeoutMs + LATE_LOOK_AFTER_MS + 1_000);
    expect(await lookedLate(gw, 'intent-late')).toBe('late_create');
    const token = await gw.adminToken();
    const listed = (await (await gw.call('/admin/provisioning/orphans', { token })).json()) as {
      orphans: { fhir_id: string; reason: string }[];
    };
    expect(listed.orphans).toEqual([expect.objectContaining({ fhir_id: late.id, reason: 'late_create' })]);
    // created again with other details, the record is not linked: its details would be dropped (helper review)
    const differing = await gw.call('/fhir/patient', {
      method: 'POST',
      token,
      json: { ...patientBody(email), dob: '1991-02-02' },
    });
    expect(differing.status).toBe(409);
    expect(await differing.json()).toMatchObject({ detail: expect.stringContaining(`Patient/${late.id}`) });
    expect(((await gw.deps.fhir.read('Patient', late.id)).body as { birthDate: string }).birthDate).toBe(
      '1990-01-01',
    );
    // the admin creates the account again: the conditional create finds the resource and links it
    const created = await createPatient(gw, email);
    expect(created.status).toBe(201);
    expect(((await created.json()) as { fhir_id: string }).fhir_id).toBe(late.id);
    const after = (await (await gw.call('/admin/provisioning/orphans', { token })).json()) as {
      orphans: unknown[];
    };
    expect(after.orphans).toEqual([]);
  });

  it('confirms nothing landed, once, and waits while another create of the email is under way', async () => {
    const clock = new ManualClock();
    const gw = await gateway({ dialect, clock });
    const admin = await adminId(gw);
    const email = `never-${dialect}@example.com`;
    const past = new Date(clock.now().getTime() - 60_000).toISOString();
    await gw.deps.db
      .insertInto('provisioning_intents')
      .values(
        intentRow({
          id: 'intent-never',
          actor: admin,
          key: 'k-never',
          email,
          displayName: 'N',
          state: 'pending',
          leaseUntil: past,
          at: past,
        }),
      )
      .execute();
    const { LATE_LOOK_AFTER_MS } = await import('../../src/provisioning/reconciliation.js');
    expect(await reconciledIntent(gw, 'intent-never')).toBe('abandoned');
    clock.advance(gw.deps.config.fhir.timeoutMs + LATE_LOOK_AFTER_MS + 1_000);
    const live = new Date(clock.now().getTime() + 60_000).toISOString();
    await gw.deps.db
      .insertInto('provisioning_intents')
      .values(
        intentRow({
          id: 'intent-live',
          actor: admin,
          key: 'k-live',
          email,
          displayName: 'N',
          state: 'pending',
          leaseUntil: live,
          at: clock.now().toISOString(),
        }),
      )
      .execute();
    // its resource may not be linked yet: the look waits for it
    expect(await lookedLate(gw, 'intent-never')).toBe('not_created');
    await gw.deps.db.deleteFrom('provisioning_intents').where('id', '=', 'intent-live').execute();
    clock.advance(60_000);
    expect(await lookedLate(gw, 'intent-never')).toBe('not_created_confirmed');
    clock.advance(3_600_000);
    expect(await lookedLate(gw, 'intent-never')).toBe('not_created_confirmed');
  });
});

// reconciliation looks for what the create sent: the gateway's identifier, appended after the admin's
// own, which may carry another deployment's account identifier (helper review)
it.each([
  [
    'another deployment’s account identifier, then ours',
    ['https://staging.example/identifiers/account-email', 'https://prod.example/identifiers/account-email'],
    'https://prod.example/identifiers/account-email',
  ],
  [
    'ours alone',
    ['https://old.example/identifiers/account-email'],
    'https://old.example/identifiers/account-email',
  ],
  ['none: today’s', [], 'https://today.example/identifiers/account-email'],
])('the identifier system a create sent, with %s', (_what, systems, expected) => {
  const email = 'copied@example.com';
  const sent = {
    resourceType: 'Patient',
    identifier: systems.map((system) => ({ system, value: email })),
  } as const;
  expect(sentAccountIdentifierSystem(sent as Patient, email, 'https://today.example')).toBe(expected);
});
