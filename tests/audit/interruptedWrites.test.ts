import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../../db/connection.js';
import { startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';
import { sweep } from '../../src/housekeeping.js';
import { createLogger } from '../../src/logger.js';
import { ManualClock } from '../helpers/clock.js';
import { startHoldingProxy } from '../helpers/fakeUpstream.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startTestGateway, tempDir } from '../helpers/gateway.js';
import { startPostgresProxy } from '../helpers/pgProxy.js';
import { createTestSchema, DIALECTS, TEST_DATABASE_URL } from '../helpers/postgres.js';
import { startGatewayProcess } from '../helpers/processes.js';

/**
 * "Every admin action is audited" — also when the process is killed while the FHIR server works
 * on the write: a real `npm start` process, SIGKILLed once the FHIR server has applied an admin's
 * write and before its answer is back. The record the write left is turned into its audit entry.
 */

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe.each(DIALECTS)('an admin write whose process is killed before it is audited (%s)', (dialect) => {
  it('is audited by the next sweep as failed, applied unknown, once', async () => {
    const fhir = await startEmbeddedFhirServer({ dataDir: tempDir() });
    cleanups.push(() => fhir.close());
    const proxy = await startHoldingProxy(
      fhir.baseUrl,
      (method, url) => method === 'POST' && /\/Observation$/.test(url),
    );
    cleanups.push(() => proxy.close());
    const dataDir = tempDir();
    const schema = dialect === 'postgres' ? await createTestSchema() : undefined;
    const gateway = await startGatewayProcess({
      DATA_DIR: dataDir,
      FHIR_BASE_URL: `${proxy.url}/fhir/R4`,
      ADMIN_EMAIL,
      ADMIN_PASSWORD,
      LOG_LEVEL: 'warn',
      ...(schema ? { DATABASE_URL: schema.url } : {}),
    });
    cleanups.push(() => gateway.proc.kill());
    const login = await fetch(`${gateway.url}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD }),
    });
    const { token } = (await login.json()) as { token: string };
    const write = fetch(`${gateway.url}/fhir/Observation`, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'weight' } }),
    }).catch(() => undefined);
    await proxy.answered;
    await gateway.proc.kill('SIGKILL');
    await write;
    proxy.release();

    const database = openDatabase({ databaseUrl: schema?.url, dataDir });
    cleanups.push(() => database.close());
    const creates = () =>
      database.db.selectFrom('audit_log').selectAll().where('action', '=', 'fhir.create').execute();
    expect(await creates()).toEqual([]);
    const later = new ManualClock(new Date(Date.now() + 30 * 60_000));
    const logger = createLogger('silent');
    await sweep(database.db, later, logger, { refreshTokenTtlSeconds: 604_800 });
    const [entry, ...more] = await creates();
    expect(more).toEqual([]);
    expect(entry).toMatchObject({
      outcome: 'failed',
      actor_role: 'admin',
      target_fhir_type: 'Observation',
      error_code: 'internal_error',
    });
    const detail = typeof entry?.detail === 'string' ? JSON.parse(entry.detail) : entry?.detail;
    expect(detail).toMatchObject({ method: 'POST', applied: 'unknown', interrupted: true });
    // once: the record is gone with its entry
    await sweep(database.db, later, logger, { refreshTokenTtlSeconds: 604_800 });
    expect(await creates()).toHaveLength(1);
    expect(await database.db.selectFrom('open_writes').selectAll().execute()).toEqual([]);
  });
});

describe.skipIf(!TEST_DATABASE_URL)(
  'an admin write the FHIR server applied while the database went away',
  () => {
    it('is answered as the server answered it, not 503 "try again", and audited by the sweep', async () => {
      const fhir = await startEmbeddedFhirServer({ dataDir: tempDir() });
      cleanups.push(() => fhir.close());
      const upstream = await startHoldingProxy(
        fhir.baseUrl,
        (method, url) => method === 'POST' && /\/Observation$/.test(url),
      );
      cleanups.push(() => upstream.close());
      const schema = await createTestSchema();
      const database = await startPostgresProxy(schema.url);
      cleanups.push(() => database.close());
      const gw = await startTestGateway({
        env: { DATABASE_URL: database.via(schema.url), FHIR_BASE_URL: `${upstream.url}/fhir/R4` },
      });
      cleanups.push(() => gw.close());
      const token = await gw.adminToken();
      const write = gw.call('/fhir/Observation', {
        method: 'POST',
        token,
        json: { resourceType: 'Observation', status: 'final', code: { text: 'weight' } },
      });
      await upstream.answered;
      database.down();
      upstream.release();
      const response = await write;
      expect(response.status).toBe(201);
      database.restore();
      const creates = () =>
        gw.deps.db.selectFrom('audit_log').selectAll().where('action', '=', 'fhir.create').execute();
      expect(await creates()).toEqual([]);
      await sweep(gw.deps.db, new ManualClock(new Date(Date.now() + 30 * 60_000)), gw.deps.logger, {
        refreshTokenTtlSeconds: gw.deps.config.jwt.refreshTokenTtlSeconds,
      });
      const [entry] = await creates();
      expect(entry).toMatchObject({ outcome: 'failed', target_fhir_type: 'Observation' });
    });
  },
);
