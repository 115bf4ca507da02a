import cluster, { type Worker } from 'node:cluster';
import type { Logger } from '../logger.js';
import { isClusterMessage } from '../workerEnv.js';
import type { AuditTrail } from './auditTrail.js';

/**
 * GET /admin/audit with WORKERS > 1 (src/cluster.ts): each worker buffers its refusals and access
 * events for up to a second (auditTrail.ts), and the kernel hands the admin's request to one of
 * them. The worker that took it flushes its own trail and asks the primary to have every other
 * worker flush theirs, so the page holds every worker's events up to the request, as with one
 * process. Nothing here runs with one process.
 */

const REQUEST = 'fhir-facade:audit-flush-request';
const FLUSH = 'fhir-facade:audit-flush';
const FLUSHED = 'fhir-facade:audit-flushed';
const DONE = 'fhir-facade:audit-flush-done';
/** The primary waits this long for a worker that does not answer (in a long lock, dying). */
const PEER_WAIT_MS = 2_000;
/** The asking worker waits a little longer than the primary, so it hears that the primary gave up. */
const RELAY_WAIT_MS = PEER_WAIT_MS + 500;

interface Message {
  readonly type: string;
  readonly id: number;
}

const isMessage = (m: unknown, type: string): m is Message =>
  isClusterMessage(m, type) && typeof (m as { id?: unknown }).id === 'number';

/** Resolves when `done` does, or after `ms`: a silent peer never holds up an admin's page. */
const atMost = (ms: number, done: Promise<unknown>): Promise<void> =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    void done.finally(() => {
      clearTimeout(timer);
      resolve();
    });
  });

/** In the primary: relays a worker's request to flush to every other live worker. Returns the stop function. */
export function relayAuditFlushes(): () => void {
  const waiting = new Map<number, () => void>();
  let next = 0;
  const onMessage = (asker: Worker, message: unknown) => {
    if (isMessage(message, FLUSHED)) {
      waiting.get(message.id)?.();
      return;
    }
    if (!isMessage(message, REQUEST)) return;
    const peers = Object.values(cluster.workers ?? {}).filter(
      (w): w is Worker => !!w && w !== asker && w.isConnected(),
    );
    const answers = peers.map((peer) => {
      const id = next++;
      return new Promise<void>((resolve) => {
        waiting.set(id, resolve);
        peer.send({ type: FLUSH, id } satisfies Message);
      }).finally(() => waiting.delete(id));
    });
    void atMost(PEER_WAIT_MS, Promise.all(answers)).then(() => {
      if (asker.isConnected()) asker.send({ type: DONE, id: message.id } satisfies Message);
    });
  };
  cluster.on('message', onMessage);
  return () => cluster.off('message', onMessage);
}

/**
 * In a worker: flushes `trail` when the primary relays another worker's request, and returns the
 * trail whose flush also asks every other worker (what GET /admin/audit calls).
 */
export function joinAuditFlushes(trail: AuditTrail, logger: Logger): AuditTrail {
  const pending = new Map<number, () => void>();
  let next = 0;
  process.on('message', (message: unknown) => {
    if (isMessage(message, DONE)) {
      pending.get(message.id)?.();
      pending.delete(message.id);
    } else if (isMessage(message, FLUSH))
      void trail.flush().finally(() => process.send?.({ type: FLUSHED, id: message.id } satisfies Message));
  });
  const askPeers = async () => {
    const id = next++;
    const answered = new Promise<void>((resolve) => {
      pending.set(id, resolve);
      process.send?.({ type: REQUEST, id } satisfies Message);
    });
    await atMost(RELAY_WAIT_MS, answered);
    // still pending: the primary's answer did not come in time
    if (!pending.delete(id)) return;
    logger.warn('audit: another worker did not flush in time; its last second may be missing');
  };
  return { ...trail, flush: () => Promise.all([trail.flush(), askPeers()]).then(() => undefined) };
}
