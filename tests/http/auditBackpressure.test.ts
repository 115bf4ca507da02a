import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.js';
import { createAuditTrail, MAX_UNWRITTEN, MAX_WAITING } from '../../src/audit/auditTrail.js';
import { systemClock } from '../../src/clock.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { heldInserts, settledWithin } from '../helpers/heldWrites.js';

/**
 * A request is answered once the audit trail has room (src/middleware/auditBackpressure.ts): a
 * trail writing slower than the requests record slows them, instead of holding ever more
 * unwritten rows in memory.
 */
describe('audit backpressure', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(() => gw.close());

  it('holds the answer while the trail has no room, and gives it once a flush takes the events', async () => {
    const writer = heldInserts();
    const trail = createAuditTrail({
      db: gw.deps.db.withPlugin(writer.plugin),
      clock: systemClock,
      logger: gw.deps.logger,
      intervalMs: 60_000,
    });
    const app = createApp({ ...gw.deps, auditTrail: trail });
    try {
      expect((await app.request('/healthz')).status).toBe(200);
      const record = (n: number) => {
        for (let i = 0; i < n; i++) trail.record({ action: 'fhir.search', outcome: 'success' });
      };
      // a flush whose insert is held, and MAX_UNWRITTEN events recorded behind it
      record(MAX_WAITING);
      await writer.reached;
      record(MAX_UNWRITTEN);
      const answer = Promise.resolve(app.request('/healthz'));
      expect(await settledWithin(answer, 100)).toBe(false);
      writer.release();
      expect((await answer).status).toBe(200);
    } finally {
      writer.release();
      await trail.close();
    }
  });
});
