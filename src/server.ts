import cluster from 'node:cluster';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { migrateToLatest, openDatabase } from '../db/connection.js';
import { createApp } from './app.js';
import { createAuditTrail } from './audit/auditTrail.js';
import { flushingEveryWorker } from './audit/clusterAuditFlush.js';
import type { CodePurpose } from './auth/accessCodes.js';
import { codeStateOf } from './auth/accountCodes.js';
import { createPasswordHasher, hashBeforeServing } from './auth/passwords.js';
import { loadTokenKeys } from './auth/signingKeys.js';
import { type Clock, systemClock } from './clock.js';
import { joinPeers, NO_PEERS } from './clusterPeers.js';
import type { Config } from './config.js';
import { createMailer } from './email/mailer.js';
import { type OutboxWorker, type OutboxWorkerDeps, startOutboxWorker } from './email/outboxWorker.js';
import { capabilityStatement, createCapabilityCache } from './fhir/capability.js';
import { loadFhirDefinitions } from './fhir/definitions.js';
import { startEmbeddedFhirServer } from './fhir/embedded/server.js';
import { createFhirService, type FhirService } from './fhir/fhirService.js';
import { createPanelMembership, forgettingInEveryWorker } from './fhir/panelMembership.js';
import { startHousekeeping } from './housekeeping.js';
import { createBackgroundTasks } from './http/background.js';
import { answerClientErrors } from './http/clientErrors.js';
import { createRequestsInFlight, type RequestsInFlight } from './http/inFlight.js';
import type { AppDeps } from './http/types.js';
import type { Logger } from './logger.js';
import { createMetrics } from './metrics/metrics.js';
import { createSmartAppStatus, forgettingAppsInEveryWorker } from './oauth/smartAppStatus.js';
import { startReconciler } from './provisioning/reconciliation.js';
import { loadSecrets } from './secrets.js';
import { ensureAdminAccount } from './users/adminAccounts.js';

export interface Gateway {
  /** Where the gateway listens, e.g. http://127.0.0.1:3000 */
  readonly url: string;
  readonly deps: AppDeps;
  readonly embeddedFhirUrl: string | undefined;
  /** Stops accepting, finishes in-flight requests (bounded), closes everything. */
  close(): Promise<void>;
}

export interface StartOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  /**
   * Runs the background work too (mail and AuditEvent lanes, reconciliation, housekeeping, the
   * first admin). Default true; with WORKERS > 1 only worker 0 does (src/cluster.ts).
   */
  readonly background?: boolean;
  /** Awaited just before the HTTP listener opens (a cluster worker waits for worker 0). */
  readonly beforeListen?: () => Promise<void>;
  /** False while other serving processes of this gateway still start (/readyz says 503). */
  readonly peersReady?: () => boolean;
}

/** Most panel-membership answers kept (each a patient id and its practitioners: ~200 bytes). */
const PANEL_CACHE_ENTRIES = 100_000;

/** Resources opened so far, closed in reverse order if a later step fails or on shutdown. */
type Closer = () => Promise<void>;

async function closeAll(closers: Closer[], logger: Logger): Promise<void> {
  for (const close of closers.reverse()) {
    try {
      await close();
    } catch (error) {
      logger.error({ err: error }, 'shutdown step failed');
    }
  }
}

/** The embedded FHIR server on loopback, for a gateway without FHIR_BASE_URL: its base URL. */
async function startEmbeddedFhir(config: Config, logger: Logger, closers: Closer[]): Promise<string> {
  const embedded = await startEmbeddedFhirServer({
    dataDir: config.dataDir,
    host: '127.0.0.1',
    port: config.fhir.embeddedPort,
    log: (msg, extra) => logger.info({ component: 'embedded-fhir', ...extra }, msg),
  });
  closers.push(() => embedded.close());
  return embedded.baseUrl;
}

/** One lane each: a hanging FHIR server never delays a mail, a failing SMTP server never an AuditEvent. */
function startOutboxLanes(workerDeps: OutboxWorkerDeps): OutboxWorker[] {
  return [
    startOutboxWorker(workerDeps, { lane: 'email', pollIntervalMs: 500 }),
    // AuditEvents go 50 to a FHIR batch: one request and two commits per batch
    startOutboxWorker(workerDeps, { lane: 'fhir_audit_event', batchSize: 50 }),
  ];
}

/**
 * The mailer, and the outbox lanes that deliver what a transaction committed (only in the process
 * that runs the background work: any other leaves its rows to worker 0, which polls every half
 * second). `wake` nudges them right after a commit.
 */
function startOutbox(
  config: Config,
  parts: Pick<OutboxWorkerDeps, 'db' | 'clock' | 'fhir' | 'logger' | 'metrics'> & {
    secrets: ReturnType<typeof loadSecrets>;
  },
  runsBackgroundWork: boolean,
  closers: Closer[],
): AppDeps['outbox'] {
  const { secrets, ...rest } = parts;
  const mailer = createMailer({
    smtpUrl: config.mail.smtpUrl,
    from: config.mail.from,
    dataDir: config.dataDir,
    logger: parts.logger,
  });
  closers.push(async () => mailer.close());
  const lanes = runsBackgroundWork
    ? startOutboxLanes({
        ...rest,
        mailer,
        sealingKey: secrets.sealingKey,
        codeState: (purpose: CodePurpose, email: string, code: string) =>
          codeStateOf(parts.db, secrets.codeHmacKey, purpose, email, code),
        appName: config.appName,
        signupUrl: config.signupUrl,
        resetUrl: config.resetUrl,
      })
    : [];
  for (const lane of lanes) closers.push(() => lane.stop());
  return {
    wake: () => {
      for (const lane of lanes) lane.wake();
    },
  };
}

/** The admin of ADMIN_EMAIL and ADMIN_PASSWORD, created once. */
async function ensureFirstAdmin(
  config: Config,
  deps: Pick<AppDeps, 'db' | 'clock'>,
  logger: Logger,
): Promise<void> {
  if (!config.firstAdmin) return;
  const result = await ensureAdminAccount(
    {
      ...deps,
      passwords: { hash: hashBeforeServing },
      passwordMinLength: config.passwordMinLength,
      appName: config.appName,
    },
    { ...config.firstAdmin, source: 'env' },
  );
  // no address in the log, the admin's included: logs travel further than the database
  if (result === 'exists')
    // a changed ADMIN_PASSWORD is easily taken for a password change: say it is not one
    logger.warn(
      { result },
      'first admin account (ADMIN_EMAIL) exists already: ADMIN_PASSWORD is not applied to it (change it with POST /auth/password/change)',
    );
  else logger.info({ result }, 'first admin account (ADMIN_EMAIL)');
}

type HttpServer = ReturnType<typeof serve>;

/** The HTTP server on HOST:PORT, once it listens. */
function listen(fetch: Parameters<typeof serve>[0]['fetch'], config: Config): Promise<HttpServer> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch, port: config.port, hostname: config.host }, () => resolve(server));
    answerClientErrors(server);
    server.once('error', reject);
  });
}

/** How long the handlers of requests cut at the shutdown deadline get to end, once their FHIR calls are. */
const CUT_REQUESTS_GRACE_MS = 2_000;

/**
 * Stops accepting, lets running requests finish within `timeoutMs`, then cuts what is left and
 * runs `afterCut` (when something was cut) before the rest of the shutdown closes anything.
 */
async function stopServing(
  server: HttpServer,
  timeoutMs: number,
  afterCut: () => Promise<void>,
): Promise<void> {
  const closed = new Promise<boolean>((resolve) => server.close(() => resolve(true)));
  if ('closeIdleConnections' in server) server.closeIdleConnections();
  const deadline = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), timeoutMs).unref());
  if (await Promise.race([closed, deadline])) return;
  // requests still running after the grace period are cut off
  if ('closeAllConnections' in server) server.closeAllConnections();
  await afterCut();
}

/**
 * The handlers of cut requests still run: their FHIR calls are ended now (answered `not_ready`,
 * audited as the stop they are, not as the FHIR server failing) and they get a moment to write
 * their rows, so the database is not closed under them.
 */
async function cutRequestsEnd(fhir: FhirService, requests: RequestsInFlight): Promise<void> {
  await fhir.close();
  await requests.settled(CUT_REQUESTS_GRACE_MS);
}

/**
 * Boots the gateway: database + migrations -> embedded FHIR server (when no FHIR_BASE_URL)
 * -> keys, hasher, mailer + outbox lanes -> first admin -> reconciliation -> HTTP server. Used by
 * main.ts and by tests.
 */
export async function startGateway(config: Config, options: StartOptions): Promise<Gateway> {
  const { logger } = options;
  const clock = options.clock ?? systemClock;
  const runsBackgroundWork = options.background ?? true;
  const closers: Closer[] = [];
  try {
    fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    const database = openDatabase({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      queryTimeoutMs: config.databaseQueryTimeoutMs,
      // one checkpointer per database: the process that runs the background work (worker 0 of a cluster)
      ...(runsBackgroundWork
        ? {
            walCheckpoints: {
              onError: (message: string) => logger.warn({ message }, 'WAL checkpoint failed'),
            },
          }
        : {}),
    });
    closers.push(() => database.close());
    await migrateToLatest(database.db);
    // closed right before the database (closers run in reverse): its last rows are written first
    const ownTrail = createAuditTrail({ db: database.bulk, clock, logger });
    closers.push(() => ownTrail.close());
    // in a cluster, what one worker must make every other do before it answers (src/clusterPeers.ts)
    const peers = cluster.isWorker ? joinPeers() : NO_PEERS;
    // the flush before GET /admin/audit reaches every worker's trail
    const auditTrail = flushingEveryWorker(ownTrail, peers, logger);
    // every mode needs the R4 definitions (path model, search policy, response check), not only the embedded server
    const definitions = await loadFhirDefinitions();
    // the fast path off without a word would cost every start ~0.4 s: say so (src/fhir/definitions.ts)
    if (definitions !== 'indexed-schema')
      logger.warn(
        { definitions },
        'R4 definitions indexed at start (~0.4 s slower): dist/definitions is missing, unreadable or built for other packages or another Node; `npm run build` remakes it',
      );

    const embeddedFhirUrl = config.fhir.baseUrl
      ? undefined
      : await startEmbeddedFhir(config, logger, closers);
    // off unless METRICS_TOKEN is set; recording is then a no-op everywhere
    const metrics = createMetrics(
      // the gauges' counts off the event loop: ~800,000 live sessions took 450 ms to count
      { db: database.reports, clock, logger },
      { enabled: !!config.metrics.token },
    );
    const fhir = createFhirService({
      baseUrl: config.fhir.baseUrl ?? (embeddedFhirUrl as string),
      timeoutMs: config.fhir.timeoutMs,
      maxConnections: config.fhir.maxConnections,
      auth: config.fhir.auth,
      ...(metrics.enabled ? { metrics } : {}),
    });

    const passwords = await createPasswordHasher({
      priority: config.passwordHashPriority,
      idleThreads: config.passwordHashThreads,
      onThreadStarted: ({ priority, reason, fallback }) =>
        fallback
          ? logger.warn(
              { priority },
              'password hashing: a hash waited too long for the idle-priority thread; a normal-priority thread takes such hashes',
            )
          : logger.info({ priority, ...(reason ? { reason } : {}) }, 'password hashing thread started'),
      onThreadFailed: ({ message, fallback }) =>
        logger.error({ message, fallback }, 'password hashing thread failed; the next hash starts another'),
    });
    closers.push(() => passwords.close());
    const tokenKeys = await loadTokenKeys(config.jwt.privateKey, config.jwt.previousKeys, config.dataDir);
    const secrets = loadSecrets(config.appSecret, config.appSecretPrevious, config.dataDir);

    const outbox = startOutbox(
      config,
      { db: database.background, clock, fhir, secrets, logger, metrics },
      runsBackgroundWork,
      closers,
    );
    closers.push(() => fhir.close());

    if (runsBackgroundWork) await ensureFirstAdmin(config, { db: database.db, clock }, logger);

    if (runsBackgroundWork)
      closers.push(
        startHousekeeping(database.background, clock, logger, {
          refreshTokenTtlSeconds: config.jwt.refreshTokenTtlSeconds,
        }),
      );
    const background = createBackgroundTasks(logger);
    closers.push(() => background.drain());
    // set when the stop begins: /readyz says so at once and keep-alive connections close after their answer
    let stopping = false;
    const requests = createRequestsInFlight();
    const deps: AppDeps = {
      config,
      db: database.db,
      backgroundDb: database.background,
      ...(database.lookups ? { lookups: database.lookups } : {}),
      dialect: database.dialect,
      fhir,
      // a patient the gateway moved is forgotten by every worker before the write is answered
      panels: forgettingInEveryWorker(
        createPanelMembership({
          fhir,
          clock,
          ttlMs: config.fhir.panelCacheTtlSeconds * 1000,
          maxEntries: PANEL_CACHE_ENTRIES,
          timeoutMs: config.fhir.timeoutMs,
        }),
        peers,
        logger,
      ),
      capabilities: createCapabilityCache(
        () => capabilityStatement(deps),
        () => clock.now().getTime(),
      ),
      // an app an admin changed is forgotten by every worker before the change is answered
      appStatus: forgettingAppsInEveryWorker(createSmartAppStatus(database.db), peers, logger),
      passwords,
      signingKey: tokenKeys.signing,
      tokenKeys,
      secrets,
      outbox,
      background,
      auditTrail,
      clock,
      logger,
      metrics,
      peersReady: options.peersReady ?? (() => true),
      stopping: () => stopping,
      requests,
    };
    // creates a crash left half-done are finished (or undone) now and every few seconds
    if (runsBackgroundWork) closers.push(startReconciler(deps));
    const app = createApp(deps);
    await options.beforeListen?.();
    const server = await listen(app.fetch, config);
    closers.push(() => {
      stopping = true;
      return stopServing(server, config.shutdownTimeoutMs, () => cutRequestsEnd(fhir, requests));
    });
    const address = server.address() as AddressInfo;
    const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;

    let closing: Promise<void> | undefined;
    return {
      url,
      deps,
      embeddedFhirUrl,
      close: () => {
        closing ??= closeAll(closers, logger);
        return closing;
      },
    };
  } catch (error) {
    await closeAll(closers, logger);
    throw error;
  }
}
