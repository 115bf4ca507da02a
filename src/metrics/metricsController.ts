import { createHash, timingSafeEqual } from 'node:crypto';
import type { Config } from '../config.js';
import { AppError } from '../errors.js';
import { createRouter } from '../http/router.js';
import { METRICS_CONTENT_TYPE } from './metrics.js';

/** RFC 6750 challenge of the metrics endpoint; the same for a missing and a wrong token. */
const METRICS_CHALLENGE = 'Bearer realm="metrics"';

const digest = (value: string) => createHash('sha256').update(value).digest();

/**
 * GET /metrics, Prometheus text format — mounted only when METRICS_TOKEN is set (else 404 like
 * any unknown path), and answered only to `Authorization: Bearer <METRICS_TOKEN>`. It lives on
 * the public listener, so the token is what guards it: compared as SHA-256 digests with
 * timingSafeEqual, so neither its content nor its length leaks through timing. It is left out of
 * /openapi.json: its client is a scraper, not an API caller (docs/operations.md, "Metrics").
 */
export function metricsRoutes(config: Pick<Config, 'metrics'>) {
  const router = createRouter();
  const token = config.metrics.token;
  if (!token) return router;
  const expected = digest(token);
  router.get('/metrics', async (c) => {
    const header = c.req.header('authorization') ?? '';
    const presented = header.startsWith('Bearer ') ? header.slice('Bearer '.length) : '';
    if (!timingSafeEqual(digest(presented), expected)) {
      throw new AppError('unauthenticated', { headers: { 'WWW-Authenticate': METRICS_CHALLENGE } });
    }
    return c.body(await c.var.deps.metrics.render(), 200, {
      'Content-Type': METRICS_CONTENT_TYPE,
      'Cache-Control': 'no-store',
    });
  });
  return router;
}
