import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  awaitCode,
  BENCH_ADMIN,
  type Caller,
  caller,
  cpuMicros,
  gatewayEnv,
  median,
  spawnReady,
  waitFor,
} from './lib.js';

/**
 * `npm run bench:compare -- <checkout A> <checkout B> [read|bundle]`: two builds of the gateway
 * side by side, for measuring one change to the hot path. Each checkout is built
 * (scripts/build.mjs) and served as `node dist/main.js` with WORKERS=1 in front of the same static
 * upstream, with a patient provisioned and signed up through its API; after a warm-up, closed
 * loops of BENCH_REQUESTS requests (20 in flight) alternate between the two for BENCH_ROUNDS
 * rounds, the order flipped every round. Reports each build's CPU per request (process utime +
 * stime from /proc) and the paired differences B − A: the machine's phases move both of a pair
 * alike, so the pairs show a change of a few per cent that separate invocations hide. Keep the
 * default warm-up: with 3,000 requests an A/A run put B 45 µs above A in every pair.
 * A checkout of another commit: `git worktree add /tmp/base <ref> && ln -s "$PWD/node_modules" /tmp/base/`.
 */

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 16);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 5000);
const WARM_UP = Number(process.env.BENCH_WARM_UP ?? 10_000);
const IN_FLIGHT = 20;
const PATIENT_EMAIL = 'bench-patient@example.com';
const PASSWORD = 'a long and plain passphrase';
const PATHS: Record<string, string> = {
  read: '/fhir/Patient/bench-patient-1',
  bundle: '/fhir/Observation?_count=20',
};

interface Served {
  readonly checkout: string;
  readonly child: ChildProcess;
  readonly client: Caller;
  readonly token: string;
}

/** One checkout built and serving, with a signed-up patient's token. */
async function serve(checkout: string, port: number, upstreamUrl: string): Promise<Served> {
  execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: checkout });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-compare-'));
  const child = spawn(process.execPath, ['--max-semi-space-size=8', 'dist/main.js'], {
    cwd: checkout,
    env: gatewayEnv({ port, dataDir, upstreamUrl, workers: 1 }),
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const client = caller(`http://127.0.0.1:${port}`, IN_FLIGHT * 2);
  await waitFor(async () => (await client.call('GET', '/readyz')).status === 200, `${checkout} to be ready`);
  const admin = (await client.call('POST', '/auth/login', undefined, BENCH_ADMIN)).json().token as string;
  const patient = { name: 'Bench Patient', email: PATIENT_EMAIL, dob: '1980-04-12' };
  const created = await client.call('POST', '/fhir/patient', admin, patient);
  if (created.status !== 201) throw new Error(`${checkout}: provisioning answered ${created.status}`);
  const code = await awaitCode(dataDir, PATIENT_EMAIL);
  const signup = { email: PATIENT_EMAIL, access_code: code, password: PASSWORD };
  const signed = await client.call('POST', '/auth/signup', undefined, signup);
  if (signed.status !== 201) throw new Error(`${checkout}: signing up answered ${signed.status}`);
  return { checkout, child, client, token: signed.json().token as string };
}

/** `count` requests, IN_FLIGHT at a time: CPU µs per request of the gateway process. */
async function closedLoop(server: Served, url: string, count: number): Promise<number> {
  const gateway = [String(server.child.pid)];
  const before = cpuMicros(gateway);
  let sent = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (sent++ < count) {
        const { status } = await server.client.call('GET', url, server.token);
        if (status !== 200) throw new Error(`${server.checkout}: ${url} answered ${status}`);
      }
    }),
  );
  return Math.round((cpuMicros(gateway) - before) / count);
}

async function main() {
  const [a, b, scenario = 'read'] = process.argv.slice(2);
  const url = PATHS[scenario];
  if (!a || !b || !url)
    throw new Error('usage: npm run bench:compare -- <checkout A> <checkout B> [read|bundle]');
  const upstream = await spawnReady(process.execPath, ['bench/staticUpstream.mjs'], {});
  const upstreamUrl = `http://127.0.0.1:${upstream.port}`;
  const servers: Served[] = [];
  try {
    servers.push(await serve(path.resolve(a), 4600, upstreamUrl));
    servers.push(await serve(path.resolve(b), 4601, upstreamUrl));
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
      await server.client.close();
      server.child.kill('SIGTERM');
    }
    upstream.child.kill('SIGTERM');
  }
}

await main();
