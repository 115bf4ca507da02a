import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../db/connection.js';
import { createApp } from '../../src/app.js';
import { createAuditTrail, MAX_UNWRITTEN, MAX_WAITING } from '../../src/audit/auditTrail.js';
import { systemClock } from '../../src/clock.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { heldInserts, settledWithin } from '../helpers/heldWrites.js';

/**
 * A request is handled once the audit trail has room (src/middleware/auditBackpressure.ts): a
 * trail writing slower than the requests record slows them, instead of holding ever more
 * unwritten rows in memory. Probes and metrics never wait.
 */
describe('audit backpressure', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(() => gw.close());

  it('holds a request while the trail has no room, and handles it once a flush takes the events', async () => {
    const writer = heldInserts();
    // the trail's own connection, as the gateway's (db/connection.ts, bulk): the held insert holds nothing else
    const database = openDatabase({ databaseUrl: undefined, dataDir: gw.dataDir });
    const trail = createAuditTrail({
      db: database.bulk.withPlugin(writer.plugin),
      clock: systemClock,
      logger: gw.deps.logger,
      intervalMs: 60_000,
    });
    const app = createApp({ ...gw.deps, auditTrail: trail });
    const ask = (path: string) => Promise.resolve(app.request(path));
    try {
      expect((await ask('/nope')).status).toBe(404);
      const record = (n: number) => {
        for (let i = 0; i < n; i++) trail.record({ action: 'fhir.search', outcome: 'success' });
      };
      // a flush whose insert is held, and MAX_UNWRITTEN events recorded behind it
      record(MAX_WAITING);
      await writer.reached;
      record(MAX_UNWRITTEN);
      const held = ask('/nope');
      expect(await settledWithin(held, 100)).toBe(false);
      for (const probe of ['/healthz', '/readyz']) expect((await ask(probe)).status).toBe(200);
      writer.release();
      expect((await held).status).toBe(404);
    } finally {
      writer.release();
      await trail.close();
      await database.close();
    }
  });
});
