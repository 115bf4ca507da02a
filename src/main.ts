import cluster from 'node:cluster';
import { type Config, ConfigError, loadConfig, loadDotEnv } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { CLUSTER_MESSAGE, isClusterMessage, WORKER_ENV } from './workerEnv.js';

/**
 * Entry point of `npm start`: config -> gateway -> wait for a signal -> graceful shutdown.
 * With WORKERS > 1 this process becomes the primary of a cluster (src/cluster.ts) and each
 * worker runs this file again as one serving process.
 */
/** Emitted on `process` once this process serves requests (the same name in scripts/runBundle.mjs). */
const SERVING_EVENT = 'fhir-facade:serving';

async function main(): Promise<void> {
  let config: Config;
  try {
    loadDotEnv();
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
  const logger = createLogger(config.logLevel);
  if (cluster.isPrimary && config.workers > 1) return runPrimary(config, logger);
  return runServer(config, logger);
}

async function runPrimary(config: Config, logger: Logger): Promise<void> {
  // imported once the configuration is known good: a bad variable gets its one line, nothing else
  const { startCluster } = await import('./cluster.js');
  const workers = await startCluster(config, config.workers, logger);
  logger.info(
    {
      url: `http://${config.host}:${config.port}`,
      public_url: config.publicBaseUrl,
      fhir: config.fhir.baseUrl ? 'external' : 'embedded',
      workers: config.workers,
    },
    `fhir-facade listening on http://${config.host}:${config.port} with ${config.workers} workers`,
  );
  onSignals(logger, () => workers.close());
}

/** One serving process: the whole gateway, or a cluster worker pointed at the primary's embedded FHIR server. */
async function runServer(config: Config, logger: Logger): Promise<void> {
  const { startGateway } = await import('./server.js');
  const embeddedByPrimary = process.env[WORKER_ENV.fhirBaseUrl];
  const firstWorker = cluster.isPrimary || process.env[WORKER_ENV.background] === '1';
  const start = cluster.isWorker ? clusterStart(firstWorker) : undefined;
  // the primary migrates and writes the signing key while its workers boot (src/cluster.ts)
  await start?.mayOpen();
  const gateway = await startGateway(
    embeddedByPrimary ? { ...config, fhir: { ...config.fhir, baseUrl: embeddedByPrimary } } : config,
    {
      logger,
      background: firstWorker,
      ...(start ? { beforeListen: start.beforeListen, peersReady: start.peersReady } : {}),
    },
  );
  if (cluster.isPrimary) {
    logger.info(
      {
        url: gateway.url,
        public_url: config.publicBaseUrl,
        fhir: gateway.embeddedFhirUrl ? 'embedded' : 'external',
      },
      `fhir-facade listening on ${gateway.url}`,
    );
  }
  onSignals(logger, () => gateway.close());
  // the code this process has compiled is what a serving process needs: scripts/runBundle.mjs
  // (which listens for this name) caches it for the next start; a cluster's primary never says it
  (process as NodeJS.EventEmitter).emit(SERVING_EVENT);
}

/**
 * A cluster worker's part in the start (src/cluster.ts): every worker boots at once and opens the
 * database when the primary says it is migrated; worker 0 listens first (it creates the first
 * admin before it does), the others when the primary says so; /readyz says ready once the
 * primary reports every worker listening.
 */
function clusterStart(firstWorker: boolean) {
  let allListening = false;
  let openNow: () => void = () => undefined;
  const openAllowed = new Promise<void>((resolve) => {
    openNow = resolve;
  });
  let mayListen: () => void = () => undefined;
  const listenAllowed = new Promise<void>((resolve) => {
    mayListen = resolve;
  });
  process.on('message', (message: unknown) => {
    if (isClusterMessage(message, CLUSTER_MESSAGE.open)) openNow();
    if (isClusterMessage(message, CLUSTER_MESSAGE.listen)) mayListen();
    if (isClusterMessage(message, CLUSTER_MESSAGE.allListening)) allListening = true;
    // the primary's watchdog: answered from the event loop, so a loop that is stuck cannot answer
    if (isClusterMessage(message, CLUSTER_MESSAGE.ping) && process.connected)
      process.send?.({ type: CLUSTER_MESSAGE.pong }, undefined, {}, () => undefined);
  });
  /** Asked once the listener above is there: an answer sent before it would be lost. */
  const ask = (type: string) => {
    // a primary gone meanwhile (its start failed) ends this worker through 'disconnect'
    if (process.connected) process.send?.({ type }, undefined, {}, () => undefined);
  };
  return {
    mayOpen: () => {
      ask(CLUSTER_MESSAGE.mayOpen);
      return openAllowed;
    },
    beforeListen: () => {
      if (firstWorker) return Promise.resolve();
      ask(CLUSTER_MESSAGE.mayListen);
      return listenAllowed;
    },
    peersReady: () => allListening,
  };
}

function onSignals(logger: Logger, close: () => Promise<void>): void {
  let shuttingDown = false;
  const shutdown = (signal: string) => {
    // a stop often signals every process at once, and a cluster's primary then signals its workers
    // again: a later signal must not kill the process while it writes the buffered audit rows
    if (shuttingDown) {
      logger.info({ signal }, 'already shutting down');
      return;
    }
    shuttingDown = true;
    logger.info({ signal }, 'shutting down');
    close().then(
      () => process.exit(0),
      (error) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((error: unknown) => {
  process.stderr.write(
    `fhir-facade failed to start: ${error instanceof Error ? error.message : String(error)}\n`,
  );
  process.exit(1);
});
