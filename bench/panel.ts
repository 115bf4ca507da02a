import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  BENCH_ADMIN as ADMIN,
  caller,
  codeFromMail,
  type Measured,
  measure,
  startNode,
  waitFor,
} from './lib.js';

/**
 * `npm run bench:panel`: a practitioner with 10, 1,000 and 10,000 assigned patients (a GP has
 * 1,500–2,500), measured on the three paths a practitioner's tools use. The embedded FHIR
 * server runs as its own process, the gateway as another, and a recording pass-through sits
 * between them to measure the longest upstream request line. Goal: p50 at 10,000 within 2x of
 * 10, no error, no upstream request line over 8 KB. Figures: docs/performance.md.
 */

const SIZES = (process.env.BENCH_PANELS ?? '10,1000,10000').split(',').map(Number);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 500);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4);
const OTHER_PATIENTS = 1_000;
const PASSWORD = 'a long and plain passphrase';

/** A loopback pass-through that records the longest request line it forwarded. */
async function recordingProxy(target: URL) {
  let longest = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const server = http.createServer((req, res) => {
    longest = Math.max(longest, Buffer.byteLength(`${req.method} ${req.url} HTTP/1.1`));
    const upstream = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
        agent,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.writeHead(502).end());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { port, longest: () => longest, close: () => server.close() };
}

async function main() {
  const fhirDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-bench-fhir-'));
  const gatewayDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-bench-gw-'));
  const fhirPort = 4100 + Math.floor(Math.random() * 100);
  const fhirProcess = startNode('src/fhir/embedded/standalone.ts', {
    FHIR_EMBEDDED_PORT: String(fhirPort),
    DATA_DIR: fhirDir,
  });
  const fhirBase = `http://127.0.0.1:${fhirPort}/fhir/R4`;
  const fhir = caller(`http://127.0.0.1:${fhirPort}`, 8);
  await waitFor(async () => (await fhir.call('GET', '/fhir/R4/metadata')).status === 200, 'the FHIR server');
  const proxy = await recordingProxy(new URL(fhirBase));
  const gatewayPort = 4300 + Math.floor(Math.random() * 100);
  const gateway = startNode('src/main.ts', {
    PORT: String(gatewayPort),
    DATA_DIR: gatewayDir,
    LOG_LEVEL: 'warn',
    ADMIN_EMAIL: ADMIN.email,
    ADMIN_PASSWORD: ADMIN.password,
    FHIR_BASE_URL: `http://127.0.0.1:${proxy.port}/fhir/R4`,
  });
  const api = caller(`http://127.0.0.1:${gatewayPort}`, CONCURRENCY);
  try {
    await waitFor(async () => (await api.call('GET', '/readyz')).status === 200, 'the gateway');
    const admin = (await api.call('POST', '/auth/login', undefined, ADMIN)).json().token as string;
    const gp = (
      await api.call('POST', '/fhir/practitioner', admin, { name: 'Dr Panel', email: 'gp@example.com' })
    ).json();
    const other = (
      await api.call('POST', '/fhir/practitioner', admin, { name: 'Dr Other', email: 'other@example.com' })
    ).json();
    await new Promise((r) => setTimeout(r, 500));
    const token = (
      await api.call('POST', '/auth/signup', undefined, {
        email: 'gp@example.com',
        access_code: codeFromMail(gatewayDir, 'gp@example.com'),
        password: PASSWORD,
      })
    ).json().token as string;

    /** Adds patients of `practitioner`, each with two Observations, straight to the FHIR server. */
    const seed = async (practitioner: string, count: number) => {
      for (let done = 0; done < count; done += 500) {
        const n = Math.min(500, count - done);
        const entry = Array.from({ length: n }, (_, i) => {
          const patient = `urn:uuid:${crypto.randomUUID()}`;
          const obs = (k: number) => ({
            request: { method: 'POST', url: 'Observation' },
            resource: {
              resourceType: 'Observation',
              status: 'final',
              code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
              subject: { reference: patient },
              valueQuantity: { value: 60 + k, unit: '/min' },
            },
          });
          return [
            {
              fullUrl: patient,
              request: { method: 'POST', url: 'Patient' },
              resource: {
                resourceType: 'Patient',
                name: [{ family: `Panel${done + i}` }],
                generalPractitioner: [{ reference: `Practitioner/${practitioner}` }],
              },
            },
            obs(1),
            obs(2),
          ];
        }).flat();
        const result = await fhir.call('POST', '/fhir/R4', undefined, {
          resourceType: 'Bundle',
          type: 'transaction',
          entry,
        });
        if (result.status !== 200) throw new Error(`seeding answered ${result.status}`);
      }
    };
    await seed(other.fhir_id, OTHER_PATIENTS);

    const rows: (Measured & { panel: number })[] = [];
    let seeded = 0;
    for (const size of SIZES) {
      await seed(gp.fhir_id, size - seeded);
      seeded = size;
      for (const [name, url] of [
        ['GET /fhir/Observation?_count=20', '/fhir/Observation?_count=20'],
        ['GET /fhir/Patient?_count=20', '/fhir/Patient?_count=20'],
        ['GET /practitioner/patients', '/practitioner/patients'],
      ] as const) {
        await measure(name, () => api.call('GET', url, token), 200, CONCURRENCY); // warm-up (JIT, caches)
        rows.push({
          panel: size,
          ...(await measure(name, () => api.call('GET', url, token), REQUESTS, CONCURRENCY)),
        });
      }
    }
    const table = rows.map(
      (r) => `| ${r.panel} | \`${r.name}\` | ${r.rps} | ${r.p50_ms} | ${r.p99_ms} | ${r.failures} |`,
    );
    process.stdout.write(
      `| panel | request | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|\n${table.join('\n')}\n\n`,
    );
    const ratio = (name: string) => {
      const small = rows.find((r) => r.name === name && r.panel === SIZES[0]);
      const large = rows.find((r) => r.name === name && r.panel === SIZES.at(-1));
      return small && large ? Math.round((large.p50_ms / small.p50_ms) * 100) / 100 : null;
    };
    const summary = {
      node: process.version,
      cpus: os.cpus().length,
      concurrency: CONCURRENCY,
      longest_upstream_request_line_bytes: proxy.longest(),
      p50_ratio_largest_to_smallest: Object.fromEntries(
        ['GET /fhir/Observation?_count=20', 'GET /fhir/Patient?_count=20', 'GET /practitioner/patients'].map(
          (n) => [n, ratio(n)],
        ),
      ),
      errors: rows.reduce((sum, r) => sum + r.failures, 0),
      rows,
    };
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  } finally {
    gateway.kill('SIGTERM');
    fhirProcess.kill('SIGTERM');
    proxy.close();
    await api.close();
    await fhir.close();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
