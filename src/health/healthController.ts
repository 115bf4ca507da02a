import { createRoute, z } from '@hono/zod-openapi';
import { sql } from 'kysely';
import { AppError } from '../errors.js';
import { fhirDefinitionsLoaded } from '../fhir/definitions.js';
import { upstreamRefusalOf } from '../fhir/upstreamStatus.js';
import { createRouter } from '../http/router.js';
import type { AppDeps } from '../http/types.js';

/** How long /readyz waits for each dependency: a probe must answer fast even when the FHIR server hangs. */
const READINESS_TIMEOUT_MS = 2_000;

type CheckResult = 'ok' | 'failed';

/** A failed check, logged with why (a short code, never a message) so a 503 from a probe can be explained. */
function notReady(deps: AppDeps, check: 'database' | 'fhir', reason: unknown): 'failed' {
  const why = typeof reason === 'string' && /^[A-Za-z0-9_]{1,40}$/.test(reason) ? reason : 'error';
  deps.logger.warn({ check, reason: why }, 'readiness check failed');
  return 'failed';
}

async function checkDatabase(deps: AppDeps): Promise<CheckResult> {
  let timer: NodeJS.Timeout | undefined;
  let gaveUp = false;
  // a hung database server never answers: the probe gives up like it does on the FHIR server
  const givenUp = new Promise<CheckResult>((resolve) => {
    timer = setTimeout(() => {
      gaveUp = true;
      resolve(notReady(deps, 'database', 'timeout'));
    }, READINESS_TIMEOUT_MS);
  });
  const answered = sql`select 1`.execute(deps.db).then(
    () => 'ok' as const,
    // a probe given up on was logged already: its late failure is not a second line
    (error: unknown) => (gaveUp ? 'failed' : notReady(deps, 'database', (error as { code?: unknown })?.code)),
  );
  try {
    return await Promise.race([answered, givenUp]);
  } finally {
    clearTimeout(timer);
  }
}

/** The FHIR server answers its CapabilityStatement, and the R4 definitions every FHIR request is judged by are loaded. */
async function checkFhir(deps: AppDeps): Promise<CheckResult> {
  if (!fhirDefinitionsLoaded()) return notReady(deps, 'fhir', 'definitions_not_loaded');
  try {
    // the summary: a probe every few seconds must not have the server build its whole statement
    await deps.fhir.capabilities({
      timeoutMs: Math.min(READINESS_TIMEOUT_MS, deps.config.fhir.timeoutMs),
      summary: true,
    });
    return 'ok';
  } catch (error) {
    return notReady(
      deps,
      'fhir',
      error instanceof AppError ? (upstreamRefusalOf(error) ?? error.code) : undefined,
    );
  }
}

const Readiness = z
  .object({
    status: z.enum(['ready', 'unavailable']),
    checks: z.object({
      database: z.enum(['ok', 'failed']),
      fhir: z.enum(['ok', 'failed']),
      workers: z
        .literal('starting')
        .optional()
        .openapi({ description: 'Present while other serving processes (WORKERS) still start' }),
      process: z.literal('stopping').optional().openapi({
        description: 'Present once the process has begun to stop (SIGTERM): take it out of rotation',
      }),
    }),
  })
  .openapi('Readiness');

const healthzRoute = createRoute({
  method: 'get',
  path: '/healthz',
  operationId: 'getLiveness',
  tags: ['health'],
  summary: 'Liveness: the process is up',
  responses: {
    200: {
      description: 'Up',
      content: { 'application/json': { schema: z.object({ status: z.literal('ok') }) } },
    },
  },
});

const readyzRoute = createRoute({
  method: 'get',
  path: '/readyz',
  operationId: 'getReadiness',
  tags: ['health'],
  summary: 'Readiness: the database and the FHIR server both answer',
  responses: {
    200: { description: 'Ready', content: { 'application/json': { schema: Readiness } } },
    503: {
      description: 'A dependency failed (named in `checks`)',
      content: { 'application/json': { schema: Readiness } },
    },
  },
});

export function healthRoutes() {
  const router = createRouter();
  router.openapi(healthzRoute, (c) => c.json({ status: 'ok' as const }, 200));
  router.openapi(readyzRoute, async (c) => {
    const [database, fhir] = await Promise.all([checkDatabase(c.var.deps), checkFhir(c.var.deps)]);
    // a balancer that opened its keep-alive connections before every worker listened would
    // leave the late workers idle: ready only once all of them serve
    const peers = c.var.deps.peersReady();
    const stopping = c.var.deps.stopping();
    const ready = database === 'ok' && fhir === 'ok' && peers && !stopping;
    const body = {
      status: ready ? ('ready' as const) : ('unavailable' as const),
      checks: {
        database,
        fhir,
        ...(peers ? {} : { workers: 'starting' as const }),
        ...(stopping ? { process: 'stopping' as const } : {}),
      },
    };
    return ready ? c.json(body, 200) : c.json(body, 503);
  });
  return router;
}
