import { randomUUID } from 'node:crypto';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';
import { startFakeUpstream } from '../helpers/fakeUpstream.js';
import { startTestGateway, type TestGateway, tempDir } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';
import { waitFor } from '../helpers/processes.js';

/**
 * With the database locked by another writer, an admin create fails fast (503 within 6 s, not
 * the 25–30 s of several lock waits in a row) and leaves nothing behind: when the lock came
 * after the FHIR create, that resource is removed again.
 */

interface Lock {
  release(): Promise<void>;
}

/** Another writer holding the lock on the gateway's database. */
async function lockDatabase(
  gw: TestGateway,
  dialect: 'sqlite' | 'postgres',
  url: string | undefined,
): Promise<Lock> {
  if (dialect === 'sqlite') {
    const other = new SqliteDatabase(path.join(gw.dataDir, 'fhir-facade.sqlite'));
    other.exec('BEGIN IMMEDIATE');
    return {
      release: async () => {
        other.exec('ROLLBACK');
        other.close();
      },
    };
  }
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query('begin');
  await client.query('lock table provisioning_intents, users in access exclusive mode');
  return {
    release: async () => {
      await client.query('rollback');
      await client.end();
    },
  };
}

/**
 * Another create of `email` racing ours on PostgreSQL: its intent open (committed, as a request's
 * is before its FHIR create) and its user row inserted but not committed, so ours waits on the
 * email's unique index until the lock wait ends it.
 */
async function racingCreate(url: string | undefined, email: string): Promise<Lock> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const now = new Date().toISOString();
  const later = new Date(Date.now() + 3_600_000).toISOString();
  await client.query(
    `insert into provisioning_intents (id, actor_user_id, fhir_type, email, display_name, resource,
       response_kind, state, lease_until, created_at, updated_at)
     values ($1, 'racer', 'Patient', $2, 'Racer', '{}', 'slim', 'pending', $3, $4, $4)`,
    [randomUUID(), email, later, now],
  );
  await client.query('begin');
  await client.query(
    `insert into users (id, email, role, created_at, updated_at) values ($1, $2, 'patient', $3, $3)`,
    [randomUUID(), email, now],
  );
  return {
    release: async () => {
      await client.query('rollback');
      await client.end();
    },
  };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const body = (email: string) => ({ name: 'Locked Out', email, dob: '1990-01-01' });

describe.each(DIALECTS)('provisioning with the database locked by another writer (%s)', (dialect) => {
  it('answers 503 within 6 s and creates nothing', async () => {
    const gw = await startTestGateway({ dialect });
    cleanups.push(() => gw.close());
    const token = await gw.adminToken();
    const lock = await lockDatabase(gw, dialect, gw.deps.config.databaseUrl);
    const started = Date.now();
    const response = await gw.call('/fhir/patient', {
      method: 'POST',
      token,
      json: body('locked-1@example.com'),
      headers: { 'idempotency-key': 'locked-1' },
    });
    const elapsed = Date.now() - started;
    await lock.release();
    expect(response.status).toBe(503);
    expect(elapsed).toBeLessThan(6_000);
    const found = await gw.deps.fhir.search(
      'Patient',
      new URLSearchParams({ email: 'locked-1@example.com' }),
    );
    expect(found.body?.entry ?? []).toEqual([]);
    // the key is free again (or lapses within a lease): the admin's retry succeeds
    let retry = await gw.call('/fhir/patient', {
      method: 'POST',
      token,
      json: body('locked-1@example.com'),
      headers: { 'idempotency-key': 'locked-1' },
    });
    for (let i = 0; i < 20 && retry.status === 409; i++) {
      await new Promise((r) => setTimeout(r, 500));
      retry = await gw.call('/fhir/patient', {
        method: 'POST',
        token,
        json: body('locked-1@example.com'),
        headers: { 'idempotency-key': 'locked-1' },
      });
    }
    expect(retry.status).toBe(201);
  }, 40_000);

  // SQLite waits for a lock on the event loop: with every write waiting its 2 s one after another,
  // a review saw creates unanswered for 30 s and /healthz take 20 s (review S2, sqliteLockGate.ts)
  if (dialect === 'sqlite')
    it('answers many writes meeting a long lock 503 after one wait, not one wait each, and writes again once it is gone', async () => {
      const gw = await startTestGateway({ dialect });
      cleanups.push(() => gw.close());
      const token = await gw.adminToken();
      const lock = await lockDatabase(gw, dialect, undefined);
      const started = Date.now();
      const answers = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          gw.call('/fhir/patient', { method: 'POST', token, json: body(`long-lock-${i}@example.com`) }),
        ),
      );
      const elapsed = Date.now() - started;
      await lock.release();
      expect(answers.map((a) => a.status)).toEqual(Array(8).fill(503));
      // one 2 s wait for all of them (8 waits in a row took 16 s)
      expect(elapsed).toBeLessThan(6_000);
      // the gate opens again once the lock is gone: the next write waits as before
      await waitFor('a write to go through', async () => {
        const created = await gw.call('/fhir/patient', {
          method: 'POST',
          token,
          json: body('after-lock@example.com'),
        });
        return created.status === 201;
      });
    }, 40_000);

  /**
   * A gateway whose FHIR server is reached through a pass-through that takes the database lock as
   * the Patient create goes by (and, with `failDeletes`, refuses every DELETE).
   */
  async function lockedAfterCreate(
    options: { failDeletes?: boolean; lock?: (gw: TestGateway) => Promise<Lock> } = {},
  ) {
    const fhir = await startEmbeddedFhirServer({ dataDir: tempDir() });
    let gw: TestGateway | undefined;
    const taken: { lock?: Lock } = {};
    const proxy = await startFakeUpstream((req, res) => {
      if (options.failDeletes && req.method === 'DELETE') {
        res
          .writeHead(503, { 'content-type': 'application/fhir+json' })
          .end('{"resourceType":"OperationOutcome"}');
        return;
      }
      const forward = () =>
        fetch(`${fhir.baseUrl}${req.url.replace(/^\/fhir\/R4/, '')}`, {
          method: req.method,
          headers: Object.fromEntries(
            Object.entries(req.headers).filter(([k]) => ['content-type', 'if-none-exist'].includes(k)),
          ) as Record<string, string>,
          ...(req.body ? { body: req.body } : {}),
        }).then(async (answer) => {
          res.writeHead(answer.status, Object.fromEntries(answer.headers)).end(await answer.text());
        });
      if (req.method === 'POST' && /\/Patient$/.test(req.url) && gw && !taken.lock) {
        const lock =
          options.lock ?? ((g: TestGateway) => lockDatabase(g, dialect, g.deps.config.databaseUrl));
        lock(gw).then((l) => {
          taken.lock = l;
          return forward();
        });
      } else forward();
    });
    cleanups.push(async () => {
      await proxy.close();
      await fhir.close();
    });
    gw = await startTestGateway({ dialect, env: { FHIR_BASE_URL: `${proxy.url}/fhir/R4` } });
    cleanups.push(() => (gw as TestGateway).close());
    return { gw, fhir, taken };
  }

  it('removes the FHIR resource again when the lock comes after the FHIR create', async () => {
    const { gw, fhir, taken } = await lockedAfterCreate();
    const token = await gw.adminToken();
    const started = Date.now();
    const response = await gw.call('/fhir/patient', {
      method: 'POST',
      token,
      json: body('locked-2@example.com'),
    });
    const elapsed = Date.now() - started;
    await taken.lock?.release();
    expect(taken.lock).toBeDefined();
    expect(response.status).toBe(503);
    expect(elapsed).toBeLessThan(6_000);
    const found = await fetch(`${fhir.baseUrl}/Patient?email=locked-2@example.com`);
    expect(((await found.json()) as { total: number }).total).toBe(0);
    expect(
      await gw.deps.db.selectFrom('users').select('id').where('email', '=', 'locked-2@example.com').execute(),
    ).toEqual([]);
  }, 40_000);

  if (dialect === 'postgres')
    it('keeps the FHIR record when the lock is another create of the same email, which may link it', async () => {
      const email = 'raced@example.com';
      const { gw, fhir, taken } = await lockedAfterCreate({
        lock: (g) => racingCreate(g.deps.config.databaseUrl, email),
      });
      const response = await gw.call('/fhir/patient', {
        method: 'POST',
        token: await gw.adminToken(),
        json: body(email),
      });
      expect(taken.lock).toBeDefined();
      expect(response.status).toBe(503);
      // not deleted under the racer: were its commit to link it, its account would lose its record
      const found = (await (await fetch(`${fhir.baseUrl}/Patient?email=${email}`)).json()) as {
        total: number;
      };
      expect(found.total).toBe(1);
      const { detail } = (await response.json()) as { detail: string };
      expect(detail).toMatch(/finished from it in the background/);
      const ours = await gw.deps.db
        .selectFrom('provisioning_intents')
        .select('state')
        .where('email', '=', email)
        .where('actor_user_id', '!=', 'racer')
        .executeTakeFirstOrThrow();
      expect(ours.state).toBe('pending');
      await taken.lock?.release();
    }, 40_000);

  it('says the account is finished in the background when the record cannot be removed either, and it is', async () => {
    const { gw, fhir, taken } = await lockedAfterCreate({ failDeletes: true });
    const token = await gw.adminToken();
    const response = await gw.call('/fhir/patient', {
      method: 'POST',
      token,
      json: body('locked-3@example.com'),
    });
    await taken.lock?.release();
    expect(response.status).toBe(503);
    // the intent stays pending (the database was busy), so reconciliation completes the account
    // from the record that stayed: "listed for an administrator" would send the admin to the wrong place
    const { detail } = (await response.json()) as { detail: string };
    expect(detail).toMatch(/finished from it in the background/);
    expect(detail).not.toMatch(/listed for an administrator/);
    const found = (await (await fetch(`${fhir.baseUrl}/Patient?email=locked-3@example.com`)).json()) as {
      entry: { resource: { id: string } }[];
    };
    expect(found.entry).toHaveLength(1);
    const account = await waitFor('reconciliation to complete the account', () =>
      gw.deps.db
        .selectFrom('users')
        .select(['fhir_resource_id', 'password_hash'])
        .where('email', '=', 'locked-3@example.com')
        .executeTakeFirst(),
    );
    expect(account).toEqual({ fhir_resource_id: found.entry[0]?.resource.id, password_hash: null });
  }, 60_000);
});
