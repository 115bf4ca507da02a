import type { Peers } from '../clusterPeers.js';
import type { Logger } from '../logger.js';
import type { Db } from '../users/userRepository.js';
import { findSmartApp } from './smartAppRepository.js';

/**
 * Whether a SMART token's app is still registered and active: asked on every request with a
 * SMART token (authenticate.ts), so the answer is reused for a few seconds. The staleness cannot
 * keep a token alive: deactivating an app revokes its sessions in the same transaction, and every
 * request reads its session. It could only refuse a reactivated app's new tokens, so every
 * process forgets an app an admin changed before the change is answered.
 */

/** How long an answer is reused. */
const APP_STATUS_TTL_MS = 10_000;
const APP_STATUS_ENTRIES = 1000;

export interface SmartAppStatus {
  /** Whether the app is registered and active (reused for up to 10 s). */
  active(clientId: string): Promise<boolean>;
  /** An admin changed the app: the next request asks the database. */
  forget(clientId: string): Promise<void>;
}

interface Known {
  readonly active: boolean;
  readonly until: number;
}

export function createSmartAppStatus(db: Db): SmartAppStatus {
  const known = new Map<string, Known>();
  return {
    active: async (clientId) => {
      const now = Date.now();
      const answer = known.get(clientId);
      if (answer && answer.until > now) return answer.active;
      const app = await findSmartApp(db, clientId);
      if (known.size >= APP_STATUS_ENTRIES) known.clear();
      const active = app?.is_active === 1;
      known.set(clientId, { active, until: now + APP_STATUS_TTL_MS });
      return active;
    },
    forget: async (clientId) => {
      known.delete(clientId);
    },
  };
}

const FORGET = 'smart-app-forget';

/**
 * With several workers, each keeps its own answers: an app an admin changed is forgotten by every
 * worker before the change is answered, so a reactivated app's tokens work on whichever worker.
 */
export function forgettingAppsInEveryWorker(
  status: SmartAppStatus,
  peers: Peers,
  logger: Logger,
): SmartAppStatus {
  peers.on(FORGET, (clientId) => (typeof clientId === 'string' ? status.forget(clientId) : undefined));
  return {
    active: status.active,
    forget: async (clientId) => {
      const [, everyone] = await Promise.all([status.forget(clientId), peers.tell(FORGET, clientId)]);
      if (!everyone)
        logger.warn('smart apps: another worker did not answer in time; it may refuse the app for 10 s');
    },
  };
}
