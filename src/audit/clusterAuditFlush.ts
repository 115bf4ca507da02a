import type { Peers } from '../clusterPeers.js';
import type { Logger } from '../logger.js';
import type { AuditTrail } from './auditTrail.js';

/**
 * GET /admin/audit with WORKERS > 1 (src/cluster.ts): each worker buffers its refusals and access
 * events for up to a second (auditTrail.ts), and the kernel hands the admin's request to one of
 * them. The worker that took it flushes its own trail and has every other worker flush theirs
 * (src/clusterPeers.ts), so the page holds every worker's events up to the request, as with one
 * process.
 */

const FLUSH = 'audit-flush';

/** The trail whose flush (what GET /admin/audit calls) also flushes every other worker's; it flushes when another asks. */
export function flushingEveryWorker(trail: AuditTrail, peers: Peers, logger: Logger): AuditTrail {
  peers.on(FLUSH, () => trail.flush());
  const flush = async () => {
    const [, everyone] = await Promise.all([trail.flush(), peers.tell(FLUSH)]);
    if (!everyone) logger.warn('audit: another worker did not flush in time; its last second may be missing');
  };
  return { ...trail, flush };
}
