import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Pool } from 'undici';
import { awaitCode, median } from './lib.js';

/**
 * `npm run bench:compare -- <checkout A> <checkout B> [read|bundle]`: two builds of the gateway
 * side by side, for measuring one change to the hot path. Each checkout is built
 * (scripts/build.mjs) and served as `node dist/main.js` with WORKERS=1 in front of the same static
 * upstream, with a patient provisioned and signed up through its API; after a warm-up, closed
 * loops of BENCH_REQUESTS requests (20 in flight) alternate between the two for BENCH_ROUNDS
 * rounds, the order flipped every round. Reports each build's CPU per request (process utime +
 * stime from /proc) and the paired differences B − A: the machine's phases move both of a pair
 * alike, so the pairs show a change of a few per cent that separate invocations hide.
 * A checkout of another commit: `git worktree add /tmp/base <ref> && ln -s "$PWD/node_modules" /tmp/base/`.
 */

const ROOT = path.resolve(import.meta.dirname, '..');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 16);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 5000);
const WARM_UP = Number(process.env.BENCH_WARM_UP ?? 10_000);
const IN_FLIGHT = 20;
const ADMIN = { email: 'bench-admin@example.com', password: 'benchmark admin passphrase' };
const PATIENT_EMAIL = 'bench-patient@example.com';
const PASSWORD = 'a long and plain passphrase';
const CLK_TCK = 100;
const PATHS: Record<string, string> = {
  read: '/fhir/Patient/bench-patient-1',
  bundle: '/fhir/Observation?_count=20',
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Served {
  readonly checkout: string;
  readonly child: ChildProcess;
  readonly pool: Pool;
  readonly token: string;
}

/** utime+stime of one process, in microseconds. */
function cpuMicros(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1_000_000) / CLK_TCK;
}

async function call(pool: Pool, method: 'GET' | 'POST', url: string, token?: string, body?: unknown) {
  const response = await pool.request({
    method,
    path: url,
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const text = await response.body.text();
  return { status: response.statusCode, json: () => JSON.parse(text) as Record<string, unknown> };
}

function startUpstream(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['bench/staticUpstream.mjs'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (chunk) => {
      out += chunk;
      const line = out.split('\n').find((l) => l.includes('"ready":true'));
      if (line) resolve({ child, url: `http://127.0.0.1:${(JSON.parse(line) as { port: number }).port}` });
    });
    child.once('exit', (code) => reject(new Error(`the static upstream exited ${code}`)));
  });
}

/** One checkout built and serving, with a signed-up patient's token. */
async function serve(checkout: string, port: number, upstreamUrl: string): Promise<Served> {
  execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: checkout });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-compare-'));
  const child = spawn(process.execPath, ['--max-semi-space-size=8', 'dist/main.js'], {
    cwd: checkout,
    env: {
      ...process.env,
      PORT: String(port),
      PUBLIC_BASE_URL: 'http://gateway.bench',
      DATA_DIR: dataDir,
      FHIR_BASE_URL: `${upstreamUrl}/fhir`,
      ADMIN_EMAIL: ADMIN.email,
      ADMIN_PASSWORD: ADMIN.password,
      WORKERS: '1',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: IN_FLIGHT * 2 });
  for (;;) {
    try {
      if ((await call(pool, 'GET', '/readyz')).status === 200) break;
    } catch {
      // not up yet
    }
    await sleep(20);
  }
  const admin = (await call(pool, 'POST', '/auth/login', undefined, ADMIN)).json().token as string;
  const patient = { name: 'Bench Patient', email: PATIENT_EMAIL, dob: '1980-04-12' };
  const created = await call(pool, 'POST', '/fhir/patient', admin, patient);
  if (created.status !== 201) throw new Error(`${checkout}: provisioning answered ${created.status}`);
  const code = await awaitCode(dataDir, PATIENT_EMAIL);
  const signup = { email: PATIENT_EMAIL, access_code: code, password: PASSWORD };
  const signed = await call(pool, 'POST', '/auth/signup', undefined, signup);
  if (signed.status !== 201) throw new Error(`${checkout}: signing up answered ${signed.status}`);
  return { checkout, child, pool, token: signed.json().token as string };
}

/** `count` requests, IN_FLIGHT at a time: CPU µs per request of the gateway process. */
async function closedLoop(server: Served, url: string, count: number): Promise<number> {
  const pid = server.child.pid as number;
  const before = cpuMicros(pid);
  let sent = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (sent++ < count) {
        const { status } = await call(server.pool, 'GET', url, server.token);
        if (status !== 200) throw new Error(`${server.checkout}: ${url} answered ${status}`);
      }
    }),
  );
  return Math.round((cpuMicros(pid) - before) / count);
}

async function main() {
  const [a, b, scenario = 'read'] = process.argv.slice(2);
  const url = PATHS[scenario];
  if (!a || !b || !url)
    throw new Error('usage: npm run bench:compare -- <checkout A> <checkout B> [read|bundle]');
  const upstream = await startUpstream();
  const servers: Served[] = [];
  try {
    servers.push(await serve(path.resolve(a), 4600, upstream.url));
    servers.push(await serve(path.resolve(b), 4601, upstream.url));
    for (const server of servers) await closedLoop(server, url, WARM_UP);
    const cpu: number[][] = [[], []];
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? [0, 1] : [1, 0];
      for (const i of order) cpu[i]?.push(await closedLoop(servers[i] as Served, url, REQUESTS));
    }
    const [first, second] = cpu as [number[], number[]];
    const pairs = second.map((value, i) => value - (first[i] as number));
    const lower = pairs.filter((d) => d < 0).length;
    process.stdout.write(
      [
        `${scenario}, CPU µs per request over ${ROUNDS} rounds of ${REQUESTS}:`,
        `  A ${a}: median ${median(first)} ${JSON.stringify(first)}`,
        `  B ${b}: median ${median(second)} ${JSON.stringify(second)}`,
        `  B − A per pair: median ${median(pairs)}; B lower in ${lower} of ${pairs.length} pairs`,
        '',
      ].join('\n'),
    );
  } finally {
    for (const server of servers) {
      await server.pool.close();
      server.child.kill('SIGTERM');
    }
    upstream.child.kill('SIGTERM');
  }
}

await main();
