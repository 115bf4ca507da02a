import cluster from 'node:cluster';
import type { Kysely } from 'kysely';
import { type Database, OUTBOX_KINDS, type OutboxKind } from '../../db/schema.js';
import type { Clock } from '../clock.js';
import { isUpstreamSuccess } from '../fhir/upstreamStatus.js';
import type { Logger } from '../logger.js';
import { joinClusterMetrics } from './clusterMetrics.js';
import { countActiveSessions, readOutboxBacklog } from './collectors.js';
import { RequestTable, registerComputed, UpstreamTable } from './latency.js';
import { promClient } from './promClient.js';

/**
 * Prometheus metrics (GET /metrics, docs/operations.md "Metrics"). Off unless METRICS_TOKEN is
 * set: then `createMetrics` returns an instance whose recording functions do nothing at all.
 * Labels are bounded by construction — route patterns (never paths), methods, statuses, error
 * codes, lane names — and never carry a user id, an email or a patient id.
 *
 * Three kinds of figure:
 * - per request and per upstream exchange (hot path): plain-number accumulators (latency.ts);
 * - rare events (refused logins, rate limits, outbox failures, upstream errors): prom-client counters;
 * - states (outbox backlog, active sessions): read from the database when scraped, never per request.
 * With WORKERS > 1 the figures of every worker are added up (clusterMetrics.ts); the states are
 * read once, by the worker that took the scrape.
 */
export interface Metrics {
  readonly enabled: boolean;
  /** Once per request, by requestLog: the route pattern, status, duration and the refusal's error code. */
  request(
    method: string,
    route: string,
    status: number,
    durationMs: number,
    errorCode: string | undefined,
  ): void;
  /** Once per upstream exchange, by fhirService: the status, or why there was none. */
  upstream(method: string, outcome: number | UpstreamFailure, durationMs: number): void;
  /** A delivery that failed: retried later, or given up for good. */
  outboxFailure(lane: OutboxKind, outcome: 'retry' | 'failed'): void;
  /** The text exposition; the database states are read first. */
  render(): Promise<string>;
}

/** An exchange that ended without a usable upstream answer. */
export type UpstreamFailure = 'timeout' | 'unreachable' | 'bad_response' | 'error';

/** The Prometheus text format, version 0.0.4. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const PREFIX = 'fhir_facade';

export interface MetricsDeps {
  readonly db: Kysely<Database>;
  readonly clock: Clock;
  readonly logger: Logger;
}

const noop = () => undefined;

/** Metrics switched off: every call returns at once; nothing is kept. */
export const DISABLED_METRICS: Metrics = Object.freeze({
  enabled: false,
  request: noop,
  upstream: noop,
  outboxFailure: noop,
  render: async () => '',
});

/** One registry per gateway (no module-level singleton: each test's gateway has its own). */
export function createMetrics(deps: MetricsDeps, options: { readonly enabled: boolean }): Metrics {
  if (!options.enabled) return DISABLED_METRICS;
  const { Counter, collectDefaultMetrics, Gauge, Registry } = promClient();
  // what each process counts (added up across cluster workers), and the database states (read once)
  const registry = new Registry();
  const states = new Registry();
  collectDefaultMetrics({ register: registry });
  const requests = new RequestTable();
  const upstreamLatency = new UpstreamTable();
  const registers = [registry];
  registerComputed(registry, {
    name: `${PREFIX}_http_requests_total`,
    help: 'Requests answered, by method, route pattern and status.',
    type: 'counter',
    values: () => requests.counts(),
  });
  registerComputed(registry, {
    name: `${PREFIX}_http_request_duration_seconds`,
    help: 'Time from the first middleware to the response, by method and route pattern.',
    type: 'histogram',
    values: () => requests.histogram(`${PREFIX}_http_request_duration_seconds`),
  });
  registerComputed(registry, {
    name: `${PREFIX}_upstream_request_duration_seconds`,
    help: 'Time of each exchange with the FHIR server (a renewed OAuth token included), by method; failures too.',
    type: 'histogram',
    values: () => upstreamLatency.histogram(`${PREFIX}_upstream_request_duration_seconds`),
  });

  const loginFailures = new Counter({
    name: `${PREFIX}_login_failures_total`,
    help: 'Logins refused for their credentials (unknown email, wrong password, account not usable), by route pattern.',
    labelNames: ['route'],
    registers,
  });
  const rateLimited = new Counter({
    name: `${PREFIX}_rate_limited_total`,
    help: 'Requests refused by a rate limit (429), by route pattern.',
    labelNames: ['route'],
    registers,
  });
  const upstreamErrors = new Counter({
    name: `${PREFIX}_upstream_errors_total`,
    help: 'Upstream FHIR exchanges that failed, by HTTP status or timeout / unreachable / bad_response / error.',
    labelNames: ['status'],
    registers,
  });
  const outboxFailures = new Counter({
    name: `${PREFIX}_outbox_failures_total`,
    help: 'Failed deliveries per lane: retry (tried again later) or failed (given up).',
    labelNames: ['lane', 'outcome'],
    registers,
  });
  const backlog = new Gauge({
    name: `${PREFIX}_outbox_backlog`,
    help: 'Rows waiting for delivery (pending or being sent) per lane, read when scraped.',
    labelNames: ['lane'],
    registers: [states],
  });
  const oldest = new Gauge({
    name: `${PREFIX}_outbox_oldest_pending_seconds`,
    help: 'Age of the oldest row waiting per lane (0 when none), read when scraped.',
    labelNames: ['lane'],
    registers: [states],
  });
  const sessions = new Gauge({
    name: `${PREFIX}_active_sessions`,
    help: 'Sessions that can still be used: gateway sessions with a live refresh token, SMART sessions not ended; read when scraped.',
    labelNames: ['kind'],
    registers: [states],
  });
  const readErrors = new Counter({
    name: `${PREFIX}_metrics_read_errors_total`,
    help: 'Scrapes whose database states could not be read (their gauges are then left out).',
    registers,
  });
  // zero rather than absent, so a rate() over them works from the first scrape
  for (const lane of OUTBOX_KINDS)
    for (const outcome of ['retry', 'failed']) outboxFailures.inc({ lane, outcome }, 0);
  loginFailures.inc({ route: '/auth/login' }, 0);

  const readStates = async () => {
    const now = deps.clock.now();
    try {
      const [rows, active] = await Promise.all([
        readOutboxBacklog(deps.db),
        countActiveSessions(deps.db, now),
      ]);
      for (const lane of OUTBOX_KINDS) {
        const row = rows.find((r) => r.lane === lane);
        backlog.set({ lane }, row?.count ?? 0);
        oldest.set({ lane }, row?.oldest ? Math.max(0, (now.getTime() - Date.parse(row.oldest)) / 1000) : 0);
      }
      sessions.set({ kind: 'gateway' }, active.gateway);
      sessions.set({ kind: 'smart' }, active.smart);
    } catch (error) {
      // the rest of the scrape is still worth having; stale states are not shown as current
      backlog.reset();
      oldest.reset();
      sessions.reset();
      readErrors.inc();
      deps.logger.warn({ err: error }, 'metrics: database states could not be read');
    }
  };
  let reading: Promise<void> | undefined;
  const shared = cluster.isWorker ? joinClusterMetrics(registry, deps.logger) : () => registry.metrics();

  return {
    enabled: true,
    request: (method, route, status, durationMs, errorCode) => {
      requests.record(method, route, status, durationMs);
      if (errorCode === undefined) return;
      if (errorCode === 'invalid_credentials') loginFailures.inc({ route });
      else if (errorCode === 'rate_limited') rateLimited.inc({ route });
    },
    upstream: (method, outcome, durationMs) => {
      upstreamLatency.record(method, durationMs);
      if (typeof outcome !== 'number' || !isUpstreamSuccess(outcome))
        upstreamErrors.inc({ status: String(outcome) });
    },
    outboxFailure: (lane, outcome) => outboxFailures.inc({ lane, outcome }),
    render: async () => {
      // concurrent scrapes share one read
      reading ??= readStates().finally(() => {
        reading = undefined;
      });
      await reading;
      return `${await shared()}\n${await states.metrics()}`;
    },
  };
}
