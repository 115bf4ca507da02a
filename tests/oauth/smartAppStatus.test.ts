import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Peers } from '../../src/clusterPeers.js';
import { createLogger } from '../../src/logger.js';
import {
  createSmartAppStatus,
  forgettingAppsInEveryWorker,
  type SmartAppStatus,
} from '../../src/oauth/smartAppStatus.js';
import type { TestGateway } from '../helpers/gateway.js';
import { registerApp, startSmartGateway } from '../helpers/smart.js';

/**
 * "Is this SMART app still active?" is answered from each worker's memory for up to 10 s, and an
 * admin's change is forgotten by every worker before it is answered (review R1: a worker that had
 * seen the app inactive refused a reactivated app's new tokens for 10 s). Two workers are played
 * by two caches over the real database, joined by an in-memory relay: clusterPeers.ts and the
 * WORKERS=2 process tests cover the relay itself.
 */

/** Two workers' peers: what one tells, the other runs before the tell is answered. */
function peerPair(): [Peers, Peers] {
  type Handlers = Map<string, (payload: unknown) => unknown>;
  const peer = (own: Handlers, other: Handlers): Peers => ({
    on: (channel, handler) => void own.set(channel, handler),
    tell: async (channel, payload) => {
      await other.get(channel)?.(payload);
      return true;
    },
  });
  const first: Handlers = new Map();
  const second: Handlers = new Map();
  return [peer(first, second), peer(second, first)];
}

describe('whether a SMART app is active, across workers', () => {
  let gw: TestGateway;
  let workers: [SmartAppStatus, SmartAppStatus];

  beforeAll(async () => {
    gw = await startSmartGateway();
    const logger = createLogger('silent');
    const [a, b] = peerPair();
    workers = [
      forgettingAppsInEveryWorker(createSmartAppStatus(gw.deps.db), a, logger),
      forgettingAppsInEveryWorker(createSmartAppStatus(gw.deps.db), b, logger),
    ];
  });
  afterAll(() => gw.close());

  const setActive = (clientId: string, active: boolean) =>
    gw.deps.db
      .updateTable('smart_apps')
      .set({ is_active: active ? 1 : 0 })
      .where('client_id', '=', clientId)
      .execute();

  it('reuses an answer until some worker forgets the app, then every worker asks again', async () => {
    const { client_id } = await registerApp(gw);
    const [one, two] = workers;
    expect([await one.active(client_id), await two.active(client_id)]).toEqual([true, true]);
    await setActive(client_id, false);
    // the answers are reused: the database is not asked on every request
    expect([await one.active(client_id), await two.active(client_id)]).toEqual([true, true]);
    await one.forget(client_id);
    expect([await one.active(client_id), await two.active(client_id)]).toEqual([false, false]);
    // reactivated: the worker that saw it inactive lets its tokens through at once
    await setActive(client_id, true);
    await one.forget(client_id);
    expect(await two.active(client_id)).toBe(true);
  });

  it('answers false for an app that is not registered', async () => {
    expect(await workers[0].active('no-such-app')).toBe(false);
  });

  it("forgets on the admin's change in this process too (PATCH /admin/smart-apps)", async () => {
    const { client_id } = await registerApp(gw);
    expect(await gw.deps.appStatus.active(client_id)).toBe(true);
    const patch = await gw.call(`/admin/smart-apps/${client_id}`, {
      method: 'PATCH',
      token: await gw.adminToken(),
      json: { active: false },
    });
    expect(patch.status).toBe(200);
    expect(await gw.deps.appStatus.active(client_id)).toBe(false);
  });
});
