import cluster, { type Worker } from 'node:cluster';
import type { Registry } from 'prom-client';
import type { Logger } from '../logger.js';
import { promClient } from './promClient.js';

/**
 * /metrics with WORKERS > 1 (src/cluster.ts): the kernel hands the scrape's connection to any one
 * worker, yet the answer must cover all of them, or counters would jump between workers' values.
 * The worker that took the scrape asks the primary; the primary gathers every worker's metrics
 * with prom-client's AggregatorRegistry (counters and histograms added up, per-process figures as
 * prom-client aggregates them) and hands the text back. Nothing here runs with one process.
 */

const REQUEST = 'fhir-facade:metrics-request';
const RESPONSE = 'fhir-facade:metrics-response';
/** prom-client gives up on silent workers after 5 s; the asking worker waits a little longer. */
const WAIT_MS = 6_000;

interface MetricsRequest {
  readonly type: typeof REQUEST;
  readonly id: number;
}
interface MetricsResponse {
  readonly type: typeof RESPONSE;
  readonly id: number;
  readonly text?: string;
  readonly error?: string;
}

const isRequest = (m: unknown): m is MetricsRequest => (m as { type?: unknown } | null)?.type === REQUEST;
const isResponse = (m: unknown): m is MetricsResponse => (m as { type?: unknown } | null)?.type === RESPONSE;

/** In the primary: answers workers' requests with every worker's metrics, added up. Returns the stop function. */
export function relayClusterMetrics(logger: Logger): () => void {
  // its constructor also listens for the workers' answers
  const aggregator = new (promClient().AggregatorRegistry)();
  const onMessage = (worker: Worker, message: unknown) => {
    if (!isRequest(message)) return;
    const reply = (answer: Omit<MetricsResponse, 'type' | 'id'>) => {
      if (worker.isConnected()) worker.send({ type: RESPONSE, id: message.id, ...answer });
    };
    aggregator.clusterMetrics().then(
      (text) => reply({ text }),
      (error: unknown) => {
        logger.warn({ err: error }, 'metrics: the workers could not be gathered');
        reply({ error: error instanceof Error ? error.message : 'failed' });
      },
    );
  };
  cluster.on('message', onMessage);
  return () => cluster.off('message', onMessage);
}

/**
 * In a worker: offers `registry` to the primary's gathering, and returns the function that asks
 * the primary for the whole cluster's text. Without an answer (no relay in the primary) the
 * worker's own metrics are served, and a warning says why.
 */
export function joinClusterMetrics(registry: Registry, logger: Logger): () => Promise<string> {
  const { AggregatorRegistry } = promClient();
  AggregatorRegistry.setRegistries([registry]);
  // constructed for its side effect: in a worker it answers the primary's gathering requests
  new AggregatorRegistry();
  const pending = new Map<number, (answer: MetricsResponse) => void>();
  let next = 0;
  process.on('message', (message: unknown) => {
    if (isResponse(message)) pending.get(message.id)?.(message);
  });
  return async () => {
    const id = next++;
    const answer = await new Promise<MetricsResponse | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), WAIT_MS);
      pending.set(id, (response) => {
        clearTimeout(timer);
        resolve(response);
      });
      process.send?.({ type: REQUEST, id } satisfies MetricsRequest);
    });
    pending.delete(id);
    if (answer?.text !== undefined) return answer.text;
    logger.warn({ error: answer?.error ?? 'no answer' }, 'metrics: serving this worker only');
    return registry.metrics();
  };
}
