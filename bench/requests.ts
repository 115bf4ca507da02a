import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Pool } from 'undici';

/**
 * `npm run bench`: starts the gateway as its own process on a fresh DATA_DIR (embedded FHIR,
 * SQLite, file mail), provisions and signs up a patient with 50 observations, then measures
 * latency (p50/p95/p99) and throughput of the hot paths from a separate client process, and
 * the gateway's resident memory. Figures go to stdout as JSON; docs/performance.md records them.
 */

const PORT = 3900 + Math.floor(Math.random() * 90);
const BASE = `http://127.0.0.1:${PORT}`;
const ADMIN = { email: 'bench-admin@example.com', password: 'benchmark admin passphrase' };
const PASSWORD = 'a long and plain passphrase';
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 10);

const pool = new Pool(BASE, { connections: CONCURRENCY });

async function call(method: string, url: string, token?: string, body?: unknown) {
  const response = await pool.request({
    method: method as 'GET',
    path: url,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const text = await response.body.text();
  return { status: response.statusCode, json: () => JSON.parse(text) };
}

async function waitReady() {
  for (let i = 0; i < 200; i++) {
    try {
      if ((await call('GET', '/readyz')).status === 200) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('gateway did not become ready');
}

function percentile(sorted: number[], p: number): number {
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! * 100) / 100;
}

async function measure(
  name: string,
  request: () => Promise<{ status: number }>,
  total = REQUESTS,
  concurrency = CONCURRENCY,
) {
  const latencies: number[] = [];
  let next = 0;
  let failures = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < total) {
        const t = performance.now();
        const { status } = await request();
        latencies.push(performance.now() - t);
        if (status >= 400) failures++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    name,
    requests: latencies.length,
    failures,
    rps: Math.round(latencies.length / seconds),
    p50_ms: percentile(latencies, 50),
    p95_ms: percentile(latencies, 95),
    p99_ms: percentile(latencies, 99),
  };
}

function rssMiB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Math.round(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
}

async function main() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-bench-'));
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: {
      ...process.env,
      PORT: String(PORT),
      DATA_DIR: dataDir,
      LOG_LEVEL: 'warn',
      ADMIN_EMAIL: ADMIN.email,
      ADMIN_PASSWORD: ADMIN.password,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    const startedAt = performance.now();
    await waitReady();
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
    const mailDir = path.join(dataDir, 'mail');
    const mail = fs
      .readdirSync(mailDir)
      .map((f) => fs.readFileSync(path.join(mailDir, f), 'utf8'))
      .find((m) => m.includes('bench@example.com'))!;
    const code = /[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}/.exec(mail)![0];
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
    await pool.close();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
