import cluster, { type Worker } from 'node:cluster';
import { isClusterMessage } from './workerEnv.js';

/**
 * With WORKERS > 1 (src/cluster.ts) each worker keeps its own memory: what one worker learns must
 * sometimes reach every other before it answers — flush your audit buffer (GET /admin/audit shows
 * every worker's events), forget this patient's panel (a moved patient is out of the former
 * practitioner's view at once), forget this SMART app's status (a reactivated app works at once).
 * A worker tells the primary, the primary has every other live worker run the channel's handler,
 * and answers the teller when all have, or after PEER_WAIT_MS:
 * a silent peer (in a long lock, dying) never holds a request up for longer. Nothing here runs
 * with one process.
 */

const TELL = 'fhir-facade:peers-tell';
const RUN = 'fhir-facade:peers-run';
const RAN = 'fhir-facade:peers-ran';
const DONE = 'fhir-facade:peers-done';
/** The primary waits this long for a worker that does not answer. */
const PEER_WAIT_MS = 2_000;
/** The teller waits a little longer than the primary, so it hears that the primary gave up. */
const RELAY_WAIT_MS = PEER_WAIT_MS + 500;

interface Message {
  readonly type: string;
  readonly id: number;
  readonly channel?: string;
  readonly payload?: unknown;
  /** DONE: whether every peer answered in time. */
  readonly all?: boolean;
}

const isMessage = (m: unknown, type: string): m is Message =>
  isClusterMessage(m, type) && typeof (m as { id?: unknown }).id === 'number';

/** True when `done` resolves within `ms`, false when the time ran out first. */
const within = (ms: number, done: Promise<unknown>): Promise<boolean> =>
  new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    void done.finally(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });

export interface Peers {
  /** Has every other worker run `channel`'s handler with `payload`; false when one did not answer in time. */
  tell(channel: string, payload?: unknown): Promise<boolean>;
  /** What this worker does when another tells it `channel`. */
  on(channel: string, handler: (payload: unknown) => unknown): void;
}

/** A process without peers (WORKERS=1, tests): there is nobody to tell. */
export const NO_PEERS: Peers = {
  tell: async () => true,
  on: () => {},
};

/** In the primary: relays what a worker tells to every other live worker. Returns the stop function. */
export function relayBetweenPeers(): () => void {
  const waiting = new Map<number, () => void>();
  let next = 0;
  const onMessage = (teller: Worker, message: unknown) => {
    if (isMessage(message, RAN)) {
      waiting.get(message.id)?.();
      return;
    }
    if (!isMessage(message, TELL)) return;
    const peers = Object.values(cluster.workers ?? {}).filter(
      (w): w is Worker => !!w && w !== teller && w.isConnected(),
    );
    const answers = peers.map((peer) => {
      const id = next++;
      return new Promise<void>((resolve) => {
        waiting.set(id, resolve);
        peer.send({ type: RUN, id, channel: message.channel, payload: message.payload } satisfies Message);
      }).finally(() => waiting.delete(id));
    });
    void within(PEER_WAIT_MS, Promise.all(answers)).then((all) => {
      if (teller.isConnected()) teller.send({ type: DONE, id: message.id, all } satisfies Message);
    });
  };
  cluster.on('message', onMessage);
  return () => cluster.off('message', onMessage);
}

/** In a worker: runs what the others tell it, and tells them through the primary. */
export function joinPeers(): Peers {
  const handlers = new Map<string, (payload: unknown) => unknown>();
  const pending = new Map<number, (all: boolean) => void>();
  let next = 0;
  process.on('message', (message: unknown) => {
    if (isMessage(message, DONE)) {
      pending.get(message.id)?.(message.all === true);
      pending.delete(message.id);
    } else if (isMessage(message, RUN)) {
      const handler = handlers.get(message.channel ?? '');
      // answered also when the handler fails: the teller must not wait for what will not come
      void Promise.resolve()
        .then(() => handler?.(message.payload))
        .catch(() => undefined)
        .finally(() => process.send?.({ type: RAN, id: message.id } satisfies Message));
    }
  });
  return {
    tell: async (channel, payload) => {
      const id = next++;
      let all = false;
      const answered = new Promise<void>((resolve) => {
        pending.set(id, (everyone) => {
          all = everyone;
          resolve();
        });
        process.send?.({ type: TELL, id, channel, payload } satisfies Message);
      });
      const heard = await within(RELAY_WAIT_MS, answered);
      if (!heard) pending.delete(id);
      return heard && all;
    },
    on: (channel, handler) => {
      handlers.set(channel, handler);
    },
  };
}
