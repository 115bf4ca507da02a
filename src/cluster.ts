import cluster, { type Worker } from 'node:cluster';
import { createServer } from 'node:net';
import { migrateToLatest, openDatabase } from '../db/connection.js';
import { loadTokenKeys } from './auth/signingKeys.js';
import { relayBetweenPeers } from './clusterPeers.js';
import type { Config } from './config.js';
import { type EmbeddedFhirServer, startEmbeddedFhirServer } from './fhir/embedded/server.js';
import type { Logger } from './logger.js';
import { relayClusterMetrics } from './metrics/clusterMetrics.js';
import { loadSecrets } from './secrets.js';
import { CLUSTER_MESSAGE, isClusterMessage, WORKER_ENV } from './workerEnv.js';

/**
 * WORKERS > 1: several serving processes on one port (node:cluster), so every core serves
 * requests. The primary owns what must exist once: the migrations, the embedded FHIR server
 * (when FHIR_BASE_URL is unset: every worker talks to it over loopback HTTP, as a single
 * process does) and the supervision of the workers (a worker that dies is started again).
 * Worker 0 also runs the background work (mail and AuditEvent lanes, reconciliation,
 * housekeeping, the first admin); the others only serve. Everything they share lives in the
 * database, so they agree on sessions, rate limits, idempotency keys and the outbox.
 */

/** The embedded server's base path, as a single process has it. */
const EMBEDDED_BASE_PATH = '/fhir/R4';

/** Migrates the database, then makes the signing key and app secret in DATA_DIR when none is configured. */
async function prepareDatabaseAndKeys(config: Config): Promise<void> {
  // bound as a single process's are: a PostgreSQL that stops answering fails the start, never holds it
  const database = openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    queryTimeoutMs: config.databaseQueryTimeoutMs,
  });
  try {
    await migrateToLatest(database.db);
  } finally {
    await database.close();
  }
  await loadTokenKeys(config.jwt.privateKey, config.jwt.previousKeys, config.dataDir);
  loadSecrets(config.appSecret, config.appSecretPrevious, config.dataDir);
}

/** A free port on loopback, for the embedded server whose address the workers must know before it listens. */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/** How long past SHUTDOWN_TIMEOUT_MS the primary waits for a worker to stop before it kills it. */
const SHUTDOWN_MARGIN_MS = 5_000;

/** A worker that died is started again after this long (and not more often). */
const RESPAWN_DELAY_MS = 1_000;

/**
 * Kills a listening worker whose event loop has not answered a ping for `timeoutMs` (a loop stuck
 * in a bug, a process stopped): the kernel keeps handing it connections that nobody answers, and
 * worker 0 holds the background work (mail, reconciliation). Its 'exit' starts another.
 */
function watchWorkers(
  timeoutMs: number,
  logger: Logger,
): { watch(worker: Worker, index: number): void; stop(): void } {
  const watched = new Map<Worker, { index: number; heard: number }>();
  const onPong = (worker: Worker, message: unknown) => {
    const entry = watched.get(worker);
    if (entry && isClusterMessage(message, CLUSTER_MESSAGE.pong)) entry.heard = Date.now();
  };
  cluster.on('message', onPong);
  const round = () => {
    const now = Date.now();
    for (const [worker, { index, heard }] of watched) {
      if (worker.isDead()) watched.delete(worker);
      else if (now - heard > timeoutMs) {
        watched.delete(worker);
        logger.error(
          { worker: index, silent_ms: now - heard },
          'gateway worker stopped answering; killing it',
        );
        worker.process.kill('SIGKILL');
      } else if (worker.isConnected())
        worker.send({ type: CLUSTER_MESSAGE.ping }, undefined, () => undefined);
    }
  };
  const timer = timeoutMs > 0 ? setInterval(round, Math.max(250, timeoutMs / 5)) : undefined;
  // the respawn timers keep the primary alive; the watchdog alone must not
  timer?.unref();
  return {
    watch(worker, index) {
      if (timer) watched.set(worker, { index, heard: Date.now() });
    },
    stop() {
      clearInterval(timer);
      cluster.off('message', onPong);
      watched.clear();
    },
  };
}

export interface Cluster {
  /** Stops the workers (SIGTERM, each drains its requests), then the embedded FHIR server. */
  close(): Promise<void>;
}

/**
 * A message to a worker. One that died meanwhile is skipped: a send to it would throw
 * ERR_IPC_CHANNEL_CLOSED as an 'error' event nobody handles, and take the primary down.
 */
function tell(worker: Worker, type: string): void {
  if (worker.isConnected()) worker.send({ type }, undefined, () => undefined);
}

/**
 * Runs in the primary: forks `workers` serving processes, migrates the database and makes the
 * signing key while they boot (each waits for the word before it opens the database), then starts
 * the embedded FHIR server.
 */
export async function startCluster(config: Config, workers: number, logger: Logger): Promise<Cluster> {
  // a scrape reaches one worker; it asks here for every worker's figures, added up
  const stopMetricsRelay = config.metrics.token ? relayClusterMetrics(logger) : () => undefined;
  // what one worker must make every other do before it answers: flush the audit trail, forget a patient's panel
  const stopPeerRelay = relayBetweenPeers();
  // the embedded server's address is fixed first, so the workers are forked knowing it and start
  // while it loads (their /readyz says 503 until it answers)
  const embeddedPort = config.fhir.baseUrl
    ? undefined
    : config.fhir.embeddedPort || (await freeLoopbackPort());
  const embeddedUrl =
    embeddedPort === undefined ? undefined : `http://127.0.0.1:${embeddedPort}${EMBEDDED_BASE_PATH}`;
  // the kernel spreads connections over the workers' shared socket: no hop through the primary
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  let closing = false;
  const respawns = new Set<NodeJS.Timeout>();
  // no worker opens the database before it is migrated and the key is in DATA_DIR: concurrent
  // migrations would race, and workers generating their own keys would refuse each other's tokens
  let prepared = false;
  const waitingToOpen: Worker[] = [];
  // worker 0 listens first: it creates the first admin before it does, so no worker may answer
  // a login before that account exists; the others boot meanwhile and ask before they listen
  let firstListening = false;
  let allListening = false;
  const waiting: Worker[] = [];
  const onAsk = (worker: Worker, message: unknown) => {
    if (isClusterMessage(message, CLUSTER_MESSAGE.mayOpen)) {
      if (prepared) tell(worker, CLUSTER_MESSAGE.open);
      else waitingToOpen.push(worker);
    } else if (isClusterMessage(message, CLUSTER_MESSAGE.mayListen)) {
      if (firstListening) tell(worker, CLUSTER_MESSAGE.listen);
      else waiting.push(worker);
    }
  };
  cluster.on('message', onAsk);
  const watchdog = watchWorkers(config.workerWatchdogMs, logger);
  const fork = (index: number): Worker => {
    const worker = cluster.fork({
      ...(embeddedUrl ? { [WORKER_ENV.fhirBaseUrl]: embeddedUrl } : {}),
      [WORKER_ENV.background]: index === 0 ? '1' : '0',
    });
    worker.once('listening', () => {
      // watched once it serves: a boot is slow on a busy machine, and then nothing waits on it yet
      watchdog.watch(worker, index);
      if (index === 0 && !firstListening) {
        firstListening = true;
        for (const other of waiting.splice(0)) tell(other, CLUSTER_MESSAGE.listen);
      }
      // a worker started again after a crash is ready as soon as it listens
      if (allListening) tell(worker, CLUSTER_MESSAGE.allListening);
    });
    worker.once('exit', (code, signal) => {
      if (closing) return;
      // during the start a death fails the start (below), also one after the worker listened
      if (!allListening) {
        failStart(new Error(`a gateway worker exited with ${code ?? signal} while starting`));
        return;
      }
      // a worker that finished its shutdown (someone sent it SIGTERM) is replaced too, but is no crash
      if (code === 0) logger.warn({ worker: index, code, signal }, 'gateway worker exited; starting another');
      else logger.error({ worker: index, code, signal }, 'gateway worker died; starting another');
      // not unref'd: when every worker died at once (and no embedded server runs here), this
      // timer is all that keeps the primary alive; unref'd, it exited 0 and nobody served
      const respawn = setTimeout(() => {
        respawns.delete(respawn);
        if (!closing) fork(index);
      }, RESPAWN_DELAY_MS);
      respawns.add(respawn);
    });
    return worker;
  };
  let failStart: (error: Error) => void = () => undefined;
  const startFailed = new Promise<never>((_, reject) => {
    failStart = reject;
  });
  // raced below; a worker that died while nothing awaited it yet must not go unhandled
  startFailed.catch(() => undefined);
  const listening = (worker: Worker) =>
    new Promise<void>((resolve) => worker.once('listening', () => resolve()));
  // forked first: a worker's boot (Node's own start, the bundle's code) takes the core this
  // process leaves idle while it migrates, instead of following it
  const started = Array.from({ length: workers }, (_, index) => fork(index));
  let embeddedStarting: Promise<EmbeddedFhirServer> | undefined;
  let embedded: EmbeddedFhirServer | undefined;
  try {
    // a worker that dies meanwhile fails the start at once, not after the migrations
    await Promise.race([prepareDatabaseAndKeys(config), startFailed]);
    prepared = true;
    for (const worker of waitingToOpen.splice(0)) tell(worker, CLUSTER_MESSAGE.open);
    embeddedStarting =
      embeddedPort === undefined
        ? undefined
        : startEmbeddedFhirServer({
            dataDir: config.dataDir,
            host: '127.0.0.1',
            port: embeddedPort,
            basePath: EMBEDDED_BASE_PATH,
            log: (msg, extra) => logger.info({ component: 'embedded-fhir', ...extra }, msg),
          });
    [embedded] = await Promise.race([
      Promise.all([embeddedStarting, ...started.map(listening)]),
      startFailed,
    ]);
  } catch (error) {
    // whatever failed, nothing of the start is left running: the workers, the embedded server, the relays
    closing = true;
    cluster.off('message', onAsk);
    watchdog.stop();
    for (const worker of started) if (!worker.isDead()) worker.process.kill('SIGTERM');
    stopMetricsRelay();
    stopPeerRelay();
    await (await embeddedStarting?.catch(() => undefined))?.close();
    throw error;
  }
  allListening = true;
  for (const worker of started) tell(worker, CLUSTER_MESSAGE.allListening);
  return {
    close: async () => {
      closing = true;
      for (const respawn of respawns) clearTimeout(respawn);
      cluster.off('message', onAsk);
      watchdog.stop();
      // a worker drains within SHUTDOWN_TIMEOUT_MS; one that cannot (its loop stuck, the process
      // stopped) would hold the primary, and the embedded server, up for good: it is killed then
      const deadline = config.shutdownTimeoutMs + SHUTDOWN_MARGIN_MS;
      const exits = Object.values(cluster.workers ?? {}).flatMap((worker) =>
        worker && !worker.isDead()
          ? [
              new Promise<void>((resolve) => {
                const kill = setTimeout(() => {
                  logger.error(
                    { pid: worker.process.pid },
                    'gateway worker did not stop in time; killing it',
                  );
                  worker.process.kill('SIGKILL');
                }, deadline);
                worker.once('exit', () => {
                  clearTimeout(kill);
                  resolve();
                });
                worker.process.kill('SIGTERM');
              }),
            ]
          : [],
      );
      await Promise.all(exits);
      // only now: a draining worker's requests still reach the others (a patient forgotten on
      // every worker, an audit page flushed by every worker, /metrics summed)
      stopMetricsRelay();
      stopPeerRelay();
      await embedded?.close();
    },
  };
}
