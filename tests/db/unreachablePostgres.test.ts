import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import {
  DATABASE_UNREACHABLE,
  isDatabaseUnreachable,
  QUERY_TIMEOUT,
  whyUnreachable,
} from '../../db/connection.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startTestGateway } from '../helpers/gateway.js';
import { type PostgresProxy, startPostgresProxy } from '../helpers/pgProxy.js';
import { createTestSchema, TEST_DATABASE_URL } from '../helpers/postgres.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A gateway whose PostgreSQL sits behind a TCP proxy, statements bound to 3 s. */
async function gatewayBehindProxy() {
  const schema = await createTestSchema();
  const proxy = await startPostgresProxy(schema.url);
  cleanups.push(() => proxy.close());
  const gw = await startTestGateway({
    env: { DATABASE_URL: proxy.via(schema.url), DATABASE_QUERY_TIMEOUT_MS: '3000' },
  });
  cleanups.push(() => gw.close());
  return { gw, proxy };
}

async function timed(request: Promise<Response>) {
  const started = Date.now();
  const response = await request;
  return { response, ms: Date.now() - started, body: (await response.json()) as Record<string, unknown> };
}

async function expectUnavailable(request: Promise<Response>) {
  const { response, ms, body } = await timed(request);
  expect(response.status).toBe(503);
  expect(body).toMatchObject({ code: 'storage_unavailable' });
  expect(response.headers.get('retry-after')).toBe('2');
  expect(JSON.stringify(body)).not.toMatch(/postgres|pg_|Connection terminated|timeout exceeded/i);
  // bounded by the statement budget (3 s) or the wait for a connection (4 s), never hanging
  expect(ms).toBeLessThan(8_000);
}

async function expectServedAgain(
  gw: Awaited<ReturnType<typeof gatewayBehindProxy>>['gw'],
  proxy: PostgresProxy,
) {
  proxy.restore();
  const users = await gw.call('/admin/users', { token: await gw.adminToken() });
  expect(users.status).toBe(200);
  expect((await gw.call('/readyz')).status).toBe(200);
}

describe.skipIf(!TEST_DATABASE_URL)('a PostgreSQL server that stops answering', () => {
  it('gives 503 storage_unavailable within seconds, readiness fails fast, and service resumes after', async () => {
    const { gw, proxy } = await gatewayBehindProxy();
    const token = await gw.adminToken();
    proxy.hang();
    const ready = await timed(gw.call('/readyz'));
    expect(ready.response.status).toBe(503);
    expect(ready.body).toMatchObject({ checks: { database: 'failed' } });
    expect(ready.ms).toBeLessThan(3_000);
    await expectUnavailable(gw.call('/admin/users', { token }));
    await expectUnavailable(
      gw.call('/auth/login', { method: 'POST', json: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD } }),
    );
    await expectServedAgain(gw, proxy);
  });
});

describe.skipIf(!TEST_DATABASE_URL)('a PostgreSQL server that refuses connections', () => {
  it('gives 503 storage_unavailable at once, not 500, and service resumes after', async () => {
    const { gw, proxy } = await gatewayBehindProxy();
    const token = await gw.adminToken();
    proxy.down();
    await expectUnavailable(gw.call('/admin/users', { token }));
    await expectUnavailable(
      gw.call('/auth/login', { method: 'POST', json: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD } }),
    );
    await expectServedAgain(gw, proxy);
  });
});

it.each([
  ['a statement past its budget', { code: QUERY_TIMEOUT }, true],
  ['a connection exception (class 08)', { code: '08006' }, true],
  ['the server shutting down', { code: '57P01' }, true],
  ['a failure of the pool to reach the server', { code: DATABASE_UNREACHABLE }, true],
  // only the pool's own failures count: a client closing its request is not the database
  ['a connection reset elsewhere', { code: 'ECONNRESET' }, false],
  ['a unique violation', { code: '23505' }, false],
  ['a lock timeout', { code: '55P03' }, false],
  ['a syntax error of ours', { code: '42601' }, false],
  ['a bug of ours', new Error('undefined is not a function'), false],
  ['nothing', undefined, false],
] as const)('%s is a database out of reach: %s', (_what, error, unreachable) => {
  expect(isDatabaseUnreachable(error)).toBe(unreachable);
});

it.each([
  [
    'a refusal by the server',
    Object.assign(new pg.DatabaseError('database "x" does not exist', 0, 'error'), { code: '3D000' }),
    'refused: database "x" does not exist (3D000)',
  ],
  [
    'a socket error',
    Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5499'), { code: 'ECONNREFUSED' }),
    'ECONNREFUSED',
  ],
  [
    'the wait for a connection over',
    new Error('timeout exceeded when trying to connect'),
    'timeout exceeded when trying to connect',
  ],
  [
    'a connection cut while it was set up',
    new Error('Connection terminated unexpectedly'),
    'Connection terminated unexpectedly',
  ],
  // any other wording could carry something of the URL: it is not repeated
  ['anything else', new Error('password authentication failed for s3cret'), 'the connection failed'],
  ['nothing', undefined, 'the connection failed'],
] as const)('why PostgreSQL could not be reached, told safely: %s', (_what, error, why) => {
  expect(whyUnreachable(error)).toBe(why);
});

describe.skipIf(!TEST_DATABASE_URL)('a DATABASE_URL naming a database that does not exist', () => {
  it('stops the start with the server\'s reason, not just "could not be reached"', async () => {
    const url = new URL(TEST_DATABASE_URL ?? '');
    url.pathname = '/no_such_database_of_ours';
    await expect(startTestGateway({ env: { DATABASE_URL: url.toString() } })).rejects.toThrow(
      'the database could not be reached: refused: database "no_such_database_of_ours" does not exist (3D000)',
    );
  });
});
