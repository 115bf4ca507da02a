import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  BENCH_ADMIN as ADMIN,
  caller,
  codeFromMail,
  measure as measureRows,
  rssMiB,
  startNode,
  waitFor,
} from './lib.js';

/**
 * `npm run bench`: starts the gateway as its own process on a fresh DATA_DIR (embedded FHIR,
 * SQLite, file mail), provisions and signs up a patient with 50 observations, then measures
 * latency (p50/p95/p99) and throughput of the hot paths from a separate client process, and
 * the gateway's resident memory. Figures go to stdout as JSON; docs/performance.md records them.
 */

const PORT = 3900 + Math.floor(Math.random() * 90);
const BASE = `http://127.0.0.1:${PORT}`;
const PASSWORD = 'a long and plain passphrase';
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 10);

const http = caller(BASE, CONCURRENCY);
const call = http.call;

async function main() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-bench-'));
  const child = startNode('src/main.ts', {
    PORT: String(PORT),
    DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
    ADMIN_EMAIL: ADMIN.email,
    ADMIN_PASSWORD: ADMIN.password,
  });
  try {
    const startedAt = performance.now();
    await waitFor(async () => (await call('GET', '/readyz')).status === 200, 'the gateway to be ready');
    const readyMs = Math.round(performance.now() - startedAt);
    const admin = (await call('POST', '/auth/login', undefined, ADMIN)).json().token as string;
    const created = (
      await call('POST', '/fhir/patient', admin, {
        name: 'Bench Patient',
        email: 'bench@example.com',
        dob: '1980-01-01',
      })
    ).json();
    for (let i = 0; i < 50; i++) {
      await call('POST', '/fhir/Observation', admin, {
        resourceType: 'Observation',
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
        subject: { reference: `Patient/${created.fhir_id}` },
        effectiveDateTime: new Date(Date.UTC(2026, 0, 1 + i)).toISOString(),
        valueQuantity: { value: 60 + i, unit: 'beats/minute' },
      });
    }
    await new Promise((r) => setTimeout(r, 500));
    const code = codeFromMail(dataDir, 'bench@example.com');
    const patient = (
      await call('POST', '/auth/signup', undefined, {
        email: 'bench@example.com',
        access_code: code,
        password: PASSWORD,
      })
    ).json().token as string;

    const results = [
      await measure('GET /healthz', () => call('GET', '/healthz')),
      await measure('GET /auth/me (patient)', () => call('GET', '/auth/me', patient)),
      await measure('GET /patient/observations?limit=20', () =>
        call('GET', '/patient/observations?limit=20', patient),
      ),
      await measure('GET /fhir/Observation?_count=20 (patient)', () =>
        call('GET', '/fhir/Observation?_count=20', patient),
      ),
      await measure('GET /fhir/Observation?_count=20 (admin)', () =>
        call('GET', '/fhir/Observation?_count=20', admin),
      ),
      // 4 in flight: one account's attempts in flight count against its limit of 5 (docs/security.md)
      await measure(
        'POST /auth/login (argon2id, 4 in flight)',
        () => call('POST', '/auth/login', undefined, ADMIN),
        300,
        4,
      ),
    ];
    const summary = {
      node: process.version,
      cpus: os.cpus().length,
      concurrency: CONCURRENCY,
      ready_ms: readyMs,
      gateway_rss_mib: rssMiB(child.pid!),
      results,
    };
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  } finally {
    child.kill('SIGTERM');
    await http.close();
  }
}

function measure(
  name: string,
  request: () => Promise<{ status: number }>,
  total = REQUESTS,
  concurrency = CONCURRENCY,
) {
  return measureRows(name, request, total, concurrency);
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
