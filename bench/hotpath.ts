import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Pool } from 'undici';
import {
  BENCH_ADMIN as ADMIN,
  awaitCode,
  busyCores,
  cpuMicros,
  gatewayEnv,
  machineTicks,
  median,
  percentile,
  rssMiB,
  spawnReady,
  uniqueResidentMiB,
} from './lib.js';

/**
 * `npm run bench`: what the gateway adds to every request, side by side with a bare streaming
 * node:http pass-through (bench/bareProxy.mjs) in front of the same static FHIR upstream
 * (bench/staticUpstream.mjs): a patient's search answering a 20-entry Bundle (~26 KB) and a
 * single Patient read, and a practitioner's search answering 20 Observations of 20 patients of a
 * panel of BENCH_PANEL_SIZE (2,000; each page the next 20: the gateway checks each against the
 * panel). Runs are interleaved (bare, gateway, bare, gateway ...) and reported as
 * medians; CPU per request is each server's process tree utime+stime (/proc/<pid>/stat) divided
 * by the requests. Also: open-loop latency at fixed rates, logins/s, read p99 during a login
 * storm, `npm start` to ready and the idle RSS of the whole process tree (also a first start with
 * ADMIN_EMAIL/ADMIN_PASSWORD, as the README's quickstart starts it). Prints one table and
 * writes bench-results/hotpath.json. Figures: docs/performance.md.
 */

const ROOT = path.resolve(import.meta.dirname, '..');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 4000);
/**
 * Requests of each kind sent to each server before anything is measured. V8 keeps compiling the
 * gateway's code for its first several thousand requests (with `--trace-opt`: 662, 92, 26 and 4
 * functions optimised per 2,500 reads; TurboFan was 18% of the process's CPU 1,500–9,500 requests
 * in, 3% after 12,000), so a short warm-up measured the JIT, not the steady state.
 */
const WARM_UP = Number(process.env.BENCH_WARM_UP ?? 10_000);
const CONNECTIONS = 20;
/** BENCH_QUICK=1: only the closed loops (CPU per request, throughput) on WORKERS=1, for measuring a change. */
const QUICK = process.env.BENCH_QUICK === '1';
/** BENCH_QUICK=logins: only the logins and the read p99 during a login storm (WORKERS=1). */
const LOGINS_ONLY = process.env.BENCH_QUICK === 'logins';
/** The start rows (npm start → ready, the idle tree's memory): the full run only. */
const START_ROWS = !QUICK && !LOGINS_ONLY;
/** How long the read p99 is measured, quiet and during the login storm (seconds). */
const STORM_SECONDS = Number(process.env.BENCH_STORM_SECONDS ?? 5);
const PASSWORD = 'a long and plain passphrase';
const LOGIN_ACCOUNTS = 10;
/** Logins measured per set-up (20 in flight), after LOGIN_WARM_UP logins per serving process. */
const LOGINS = Number(process.env.BENCH_LOGINS ?? 800);
/**
 * Logins before the login figures are taken. A login runs each of its handlers once, so V8
 * optimises them only after several hundred logins: measured straight after start the main
 * thread spent 1.6-2.2 ms per login over the first 400, and 1.1-1.3 ms after 1,000.
 */
const LOGIN_WARM_UP = Number(process.env.BENCH_LOGIN_WARM_UP ?? 1000);
/** The practitioner's patients in the static upstream (it reads the same variable). */
const PANEL_SIZE = Number(process.env.BENCH_PANEL_SIZE ?? 2000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every process in the tree under `pid` (npm -> sh -> node ...), from /proc. */
function processTree(pid: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parents.set(Number(entry), Number(fields[1]));
    } catch {
      // exited meanwhile
    }
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++)
    for (const [child, parent] of parents) if (parent === tree[i]) tree.push(child);
  return tree;
}

interface Target {
  name: string;
  pool: Pool;
  pids: () => number[];
}

async function get(pool: Pool, url: string, token?: string): Promise<number> {
  const response = await pool.request({
    method: 'GET',
    path: url,
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  await response.body.dump();
  return response.statusCode;
}

async function post(pool: Pool, url: string, body: unknown, token?: string) {
  const response = await pool.request({
    method: 'POST',
    path: url,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: response.statusCode, json: (await response.body.json()) as Record<string, unknown> };
}

/** Closed loop: CONNECTIONS requests in flight; throughput and CPU µs per request of the target's processes. */
async function closedLoop(target: Target, url: string, token: string | undefined, total = REQUESTS) {
  const pids = target.pids().map(String);
  const cpuBefore = cpuMicros(pids);
  const machineBefore = machineTicks();
  let next = 0;
  let errors = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (next++ < total) if ((await get(target.pool, url, token)) >= 400) errors++;
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return {
    rps: Math.round(total / seconds),
    cpuUsPerRequest: Math.round((cpuMicros(pids) - cpuBefore) / total),
    // the client, the upstream and every server's threads: what the machine had left
    busyCores: busyCores(machineBefore, machineTicks(), os.availableParallelism()),
    errors,
  };
}

/** Open loop: requests sent at a fixed rate whatever the answers do; latency counted from the scheduled time. */
async function openLoop(
  target: Target,
  url: string,
  token: string | undefined,
  rate: number,
  seconds: number,
) {
  const latencies: number[] = [];
  const total = Math.round(rate * seconds);
  const start = performance.now() + 50;
  let errors = 0;
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const at = start + (i * 1000) / rate;
    const wait = at - performance.now();
    if (wait > 1) await sleep(wait);
    inFlight.push(
      get(target.pool, url, token).then((status) => {
        if (status >= 400) errors++;
        latencies.push(performance.now() - at);
      }),
    );
  }
  await Promise.all(inFlight);
  latencies.sort((a, b) => a - b);
  return { p50: percentile(latencies, 50), p99: percentile(latencies, 99), errors };
}

/**
 * NODE_EXTRA_CA_CERTS, when this machine sets it: Node 20 then builds OpenSSL's whole root store
 * as every process starts, not at its first TLS connection (nodejs/node#40524): ~80 ms of CPU in
 * each of `npm start`'s four Node processes here, whether or not they ever speak TLS.
 */
const EXTRA_CA_CERTS = process.env.NODE_EXTRA_CA_CERTS;

/** A process tree's idle memory: RSS summed, and its physical pages counted once (uniqueResidentMiB). */
interface TreeMemory {
  readonly idle_rss_mib_process_tree: number;
  readonly idle_distinct_pages_mib_process_tree: number | null;
}

function treeMemory(pid: number): TreeMemory {
  const pids = processTree(pid);
  return {
    idle_rss_mib_process_tree: rssMiB(pids),
    idle_distinct_pages_mib_process_tree: uniqueResidentMiB(pids) ?? null,
  };
}

/**
 * How long after ready the default start's memory is measured once more. V8's memory reducer gives
 * back the young generation the start grew (and frees its garbage) only after some seconds of
 * quiet: 15–45 s here, ~10 MiB per serving process.
 */
const SETTLE_MS = 45_000;

/** A start row's memory cell: `326 MiB (186 MiB distinct)`. */
const memoryCell = (m: TreeMemory) =>
  `${m.idle_rss_mib_process_tree} MiB (${m.idle_distinct_pages_mib_process_tree === null ? 'distinct: n/a' : `${m.idle_distinct_pages_mib_process_tree} MiB distinct`})`;

/**
 * `npm start` on the embedded default (fresh DATA_DIR, embedded FHIR server): time to ready and
 * idle RSS of the tree. `firstAdmin`: with ADMIN_EMAIL/ADMIN_PASSWORD, as the README's quickstart
 * starts it (the account is created before the gateway listens). `withoutExtraCaCerts`: with
 * NODE_EXTRA_CA_CERTS unset, to show what this machine's setting costs the start.
 */
async function embeddedStartup({
  workers,
  firstAdmin = false,
  withoutExtraCaCerts = false,
  settled = false,
}: {
  workers?: number;
  firstAdmin?: boolean;
  withoutExtraCaCerts?: boolean;
  /** Its memory again SETTLE_MS after ready. */
  settled?: boolean;
} = {}): Promise<{ readyMs: number; memory: TreeMemory; settledMemory?: TreeMemory }> {
  // a port each: a start whose port is taken fails (untilReady) instead of timing whoever holds it
  const port = nextStartPort++;
  const { NODE_EXTRA_CA_CERTS: _extraCaCerts, ...withoutCaCerts } = process.env;
  const started = performance.now();
  const child = spawn('npm', ['start', '-s'], {
    cwd: ROOT,
    env: {
      ...(withoutExtraCaCerts ? withoutCaCerts : process.env),
      PORT: String(port),
      DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'ff-start-')),
      ...(workers ? { WORKERS: String(workers) } : {}),
      ...(firstAdmin ? { ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password } : {}),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
    detached: true,
  });
  gatewayGroups.add(child);
  const pool = new Pool(`http://127.0.0.1:${port}`);
  try {
    await untilReady(pool, child, 10);
    const readyMs = Math.round(performance.now() - started);
    await sleep(3000);
    const memory = treeMemory(child.pid as number);
    if (!settled) return { readyMs, memory };
    await sleep(SETTLE_MS - 3000);
    return { readyMs, memory, settledMemory: treeMemory(child.pid as number) };
  } finally {
    await pool.close();
    await stopTree(child);
  }
}

/**
 * Every gateway the bench started, each a process group of its own (so that a stop reaches its whole
 * tree): a bench stopped by a signal stops them too, else they outlive it and hold their ports.
 */
const gatewayGroups = new Set<ChildProcess>();
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => {
    for (const child of gatewayGroups) signalGroup(child, 'SIGTERM');
    process.exit(130);
  });

/** `name` to `child`'s process group; nothing when it has gone. */
function signalGroup(child: ChildProcess, name: NodeJS.Signals): void {
  try {
    process.kill(-(child.pid as number), name);
  } catch {
    // gone
  }
}

/** The start rows' ports, one after another from a random first (a run's four starts, 4900–4993). */
let nextStartPort = 4900 + Math.floor(Math.random() * 90);

/**
 * SIGTERM to `child`'s process group, then waits until every process of its tree has gone (SIGKILL
 * after 15 s): npm may exit before the gateway it started, and the port is free only then.
 */
async function stopTree(child: ChildProcess): Promise<void> {
  const tree = processTree(child.pid as number);
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  signalGroup(child, 'SIGTERM');
  const killAt = performance.now() + 15_000;
  while (tree.some(alive)) {
    if (performance.now() > killAt) signalGroup(child, 'SIGKILL');
    await sleep(50);
  }
}

/**
 * dist/ built and the bundle's code cache made (scripts/warmCodeCache.mjs), as any start after the
 * first finds them: a start right after a source change builds first and then compiles without the
 * cache, and the start rows would measure that rather than the start.
 */
function prepareBuild(): void {
  for (const script of ['scripts/build.mjs', 'scripts/warmCodeCache.mjs'])
    execFileSync(process.execPath, [script], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
}

/** How long a server the bench started may take to answer /readyz 200. */
const READY_DEADLINE_MS = 60_000;

/**
 * Polls `/readyz` until it answers 200; throws when `child` exits first (its port taken, a crash)
 * or READY_DEADLINE_MS pass, instead of polling forever while the bench's other servers keep running.
 */
async function untilReady(pool: Pool, child: ChildProcess, pollMs: number): Promise<void> {
  const deadline = performance.now() + READY_DEADLINE_MS;
  for (;;) {
    try {
      if ((await get(pool, '/readyz')) === 200) return;
    } catch {
      // not up yet
    }
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`the gateway exited (${child.exitCode ?? child.signalCode}) before it was ready`);
    if (performance.now() > deadline) throw new Error(`the gateway was not ready in ${READY_DEADLINE_MS} ms`);
    await sleep(pollMs);
  }
}

async function main() {
  if (START_ROWS) prepareBuild();
  const notMeasured: Awaited<ReturnType<typeof embeddedStartup>> = {
    readyMs: 0,
    memory: { idle_rss_mib_process_tree: 0, idle_distinct_pages_mib_process_tree: null },
  };
  const embedded = START_ROWS ? await embeddedStartup({ settled: true }) : notMeasured;
  const embeddedOne = START_ROWS ? await embeddedStartup({ workers: 1 }) : notMeasured;
  const embeddedAdmin = START_ROWS ? await embeddedStartup({ firstAdmin: true }) : notMeasured;
  const embeddedNoCaCerts =
    START_ROWS && EXTRA_CA_CERTS ? await embeddedStartup({ withoutExtraCaCerts: true }) : undefined;
  const upstream = await spawnReady(process.execPath, ['bench/staticUpstream.mjs'], {});
  const upstreamUrl = `http://127.0.0.1:${upstream.port}`;
  const bare = await spawnReady(process.execPath, ['bench/bareProxy.mjs'], { TARGET: upstreamUrl });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-hotpath-'));
  let essentialProcess: ChildProcess | undefined;
  let essentialPool: Pool | undefined;
  /** `npm start` in front of the static upstream with `workers` serving processes; resolves once ready. */
  const startGateway = async (workers: number, port = 4500 + Math.floor(Math.random() * 400)) => {
    const url = `http://127.0.0.1:${port}`;
    const startedAt = performance.now();
    // BENCH_PROFILE=<dir>: the gateway runs as `node --cpu-prof dist/main.js` and leaves a .cpuprofile there
    const profile = process.env.BENCH_PROFILE;
    if (profile) execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: ROOT });
    const [command, args] = profile
      ? [process.execPath, ['--cpu-prof', `--cpu-prof-dir=${profile}`, 'dist/main.js']]
      : ['npm', ['start', '-s']];
    // BENCH_GATEWAY_LOG=<file>: the gateway's log lines are appended there (otherwise dropped)
    const log = process.env.BENCH_GATEWAY_LOG ? fs.openSync(process.env.BENCH_GATEWAY_LOG, 'a') : 'ignore';
    const child = spawn(command, args, {
      cwd: ROOT,
      env: gatewayEnv({ port, dataDir, upstreamUrl, workers }),
      stdio: ['ignore', log, 'inherit'],
      detached: true,
    });
    gatewayGroups.add(child);
    if (typeof log === 'number') fs.closeSync(log);
    const pool = new Pool(url, { connections: CONNECTIONS * 2 });
    try {
      await untilReady(pool, child, 20);
    } catch (error) {
      await pool.close();
      await stopTree(child);
      throw error;
    }
    const readyMs = Math.round(performance.now() - startedAt);
    const target: Target = { name: 'gateway', pool, pids: () => processTree(child.pid as number) };
    // once: a second wait for the 'exit' of a process that has exited would never end
    let stopped: Promise<void> | undefined;
    const stop = () => {
      stopped ??= (async () => {
        await pool.close();
        await stopTree(child);
      })();
      return stopped;
    };
    return { child, pool, port, target, readyMs, stop };
  };
  // the comparisons with the bare proxy run the gateway on one core (WORKERS=1), as the bare proxy is
  const one = await startGateway(1);
  const running = [one];
  const gw = one.pool;
  const gateway = one.child;
  const bareTarget: Target = {
    name: 'bare',
    pool: new Pool(`http://127.0.0.1:${bare.port}`, { connections: CONNECTIONS * 2 }),
    pids: () => [bare.child.pid as number],
  };
  const gwTarget = one.target;
  try {
    const readyMs = one.readyMs;
    await sleep(2000);
    const idleMemory = treeMemory(gateway.pid as number);
    const bundleBytes = (await (await fetch(`${upstreamUrl}/fhir/Observation`)).text()).length;

    const admin = (await post(gw, '/auth/login', ADMIN)).json.token as string;
    const emails = [
      'bench-patient@example.com',
      ...Array.from({ length: LOGIN_ACCOUNTS }, (_, i) => `bench-login-${i}@example.com`),
    ];
    for (const email of emails) {
      const created = await post(
        gw,
        '/fhir/patient',
        { name: 'Bench Patient', email, dob: '1980-04-12' },
        admin,
      );
      if (created.status !== 201) throw new Error(`provisioning ${email} answered ${created.status}`);
    }
    const tokens: string[] = [];
    for (const email of emails) {
      const signed = await post(gw, '/auth/signup', {
        email,
        access_code: await awaitCode(dataDir, email),
        password: PASSWORD,
      });
      if (signed.status !== 201) throw new Error(`signing up ${email} answered ${signed.status}`);
      tokens.push(signed.json.token as string);
    }
    const patient = tokens[0] as string;
    // a practitioner whose panel the static upstream holds (its Practitioner id: bench-practitioner-1)
    const practitionerEmail = 'bench-practitioner@example.com';
    const gp = await post(gw, '/fhir/practitioner', { name: 'Dr Bench', email: practitionerEmail }, admin);
    if (gp.status !== 201) throw new Error(`provisioning the practitioner answered ${gp.status}`);
    const gpSignup = await post(gw, '/auth/signup', {
      email: practitionerEmail,
      access_code: await awaitCode(dataDir, practitionerEmail),
      password: PASSWORD,
    });
    if (gpSignup.status !== 201) throw new Error(`signing up the practitioner answered ${gpSignup.status}`);
    const practitioner = gpSignup.json.token as string;
    // the figure is of a whole page: every entry kept, none dropped as outside the panel
    const firstPage = await gw.request({
      method: 'GET',
      path: '/fhir/Observation?_count=20',
      headers: { authorization: `Bearer ${practitioner}` },
    });
    const shown = ((await firstPage.body.json()) as { entry?: unknown[] }).entry?.length;
    if (firstPage.statusCode !== 200 || shown !== 20)
      throw new Error(`the practitioner's search answered ${firstPage.statusCode} with ${shown} entries`);
    // the floor of the gateway's own work (bench/essentialProxy.mjs), on the gateway's database
    const essential = await spawnReady(process.execPath, ['bench/essentialProxy.mjs'], {
      FHIR_BASE_URL: `${upstreamUrl}/fhir`,
      PUBLIC_BASE_URL: 'http://gateway.bench',
      DATABASE_FILE: path.join(dataDir, 'fhir-facade.sqlite'),
    });
    essentialProcess = essential.child;
    essentialPool = new Pool(`http://127.0.0.1:${essential.port}`, { connections: CONNECTIONS * 2 });
    const essentialTarget: Target = {
      name: 'essential',
      pool: essentialPool,
      pids: () => [essential.child.pid as number],
    };
    const search = '/fhir/Observation?_count=20';
    const read = `/fhir/Patient/${process.env.BENCH_PATIENT_ID ?? 'bench-patient-1'}`;
    // the bare proxy is sent the search as the gateway narrows it for the practitioner
    const panelUrl = (t: Target) =>
      t === bareTarget
        ? `${search}&subject:Patient.general-practitioner=Practitioner/${gp.json.fhir_id as string}`
        : search;
    const rows: Record<string, number[]> = {};
    const add = (key: string, value: number) => {
      rows[key] ??= [];
      rows[key]?.push(value);
    };
    // warm-up (JIT, pools, caches); what the gateway's warm-up cost per request is kept as a figure
    for (const t of [bareTarget, essentialTarget, gwTarget]) {
      const token = t === bareTarget ? undefined : patient;
      add(`${t.name}.warmup.bundle.cpu_us`, (await closedLoop(t, search, token, WARM_UP)).cpuUsPerRequest);
      add(`${t.name}.warmup.read.cpu_us`, (await closedLoop(t, read, token, WARM_UP)).cpuUsPerRequest);
      if (t !== essentialTarget)
        add(
          `${t.name}.warmup.panel.cpu_us`,
          (await closedLoop(t, panelUrl(t), t === bareTarget ? undefined : practitioner, WARM_UP))
            .cpuUsPerRequest,
        );
    }
    for (const url of ['/healthz', '/auth/me']) await closedLoop(gwTarget, url, patient, WARM_UP / 2);
    for (let round = 0; round < (LOGINS_ONLY ? 0 : ROUNDS); round++) {
      for (const t of [bareTarget, essentialTarget, gwTarget]) {
        const token = t === bareTarget ? undefined : patient;
        const bundle = await closedLoop(t, search, token);
        add(`${t.name}.bundle.rps`, bundle.rps);
        add(`${t.name}.bundle.cpu_us`, bundle.cpuUsPerRequest);
        add(`${t.name}.errors`, bundle.errors);
        const single = await closedLoop(t, read, token);
        add(`${t.name}.read.rps`, single.rps);
        add(`${t.name}.read.cpu_us`, single.cpuUsPerRequest);
        add(`${t.name}.errors`, single.errors);
        // the gateway's own floor: no upstream (/healthz), and a token, the caller query and a DTO (/auth/me)
        if (t === gwTarget)
          for (const [name, url] of [
            ['healthz', '/healthz'],
            ['me', '/auth/me'],
          ] as const) {
            const floor = await closedLoop(t, url, token);
            add(`gateway.${name}.cpu_us`, floor.cpuUsPerRequest);
            add('gateway.errors', floor.errors);
          }
        // the practitioner's search (the essential proxy knows patients only), after the floors: the
        // access rows still waiting for the trail's next write (up to MAX_UNWRITTEN, 2,000: the answers
        // wait for the writer past it) stay out of their short loops
        if (t !== essentialTarget) {
          const panel = await closedLoop(t, panelUrl(t), t === bareTarget ? undefined : practitioner);
          add(`${t.name}.panel.rps`, panel.rps);
          add(`${t.name}.panel.cpu_us`, panel.cpuUsPerRequest);
          add(`${t.name}.errors`, panel.errors);
        }
        for (const rate of QUICK || t === essentialTarget ? [] : [250, 1000]) {
          const lat = await openLoop(t, search, token, rate, 4);
          add(`${t.name}.bundle.${rate}.p50`, lat.p50);
          add(`${t.name}.bundle.${rate}.p99`, lat.p99);
          add(`${t.name}.errors`, lat.errors);
        }
      }
    }

    const m = (key: string) => median(rows[key] ?? []);
    const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
    if (QUICK) {
      const line = (what: string, key: string) =>
        `${what}: gateway ${m(`gateway.${key}`)} / bare ${m(`bare.${key}`)} = ${Math.round((m(`gateway.${key}`) / m(`bare.${key}`)) * 100) / 100}× (gateway ${JSON.stringify(rows[`gateway.${key}`])}, bare ${JSON.stringify(rows[`bare.${key}`])})`;
      process.stdout.write(
        `${[line('CPU µs per Bundle request', 'bundle.cpu_us'), line('CPU µs per read', 'read.cpu_us'), line("CPU µs per practitioner's Bundle (panel)", 'panel.cpu_us'), line('Bundle req/s', 'bundle.rps'), line('read req/s', 'read.rps'), line("practitioner's Bundle req/s", 'panel.rps'), `gateway floor, CPU µs per request: /healthz ${m('gateway.healthz.cpu_us')}, /auth/me ${m('gateway.me.cpu_us')}`, `essential work (bench/essentialProxy.mjs), CPU µs per Bundle / read: ${m('essential.bundle.cpu_us')} / ${m('essential.read.cpu_us')} = ${ratio(m('essential.bundle.cpu_us'), m('bare.bundle.cpu_us'))}× / ${ratio(m('essential.read.cpu_us'), m('bare.read.cpu_us'))}× bare (${JSON.stringify(rows['essential.bundle.cpu_us'])}, ${JSON.stringify(rows['essential.read.cpu_us'])}); req/s ${m('essential.bundle.rps')} / ${m('essential.read.rps')}`, `warm-up (${WARM_UP} requests), CPU µs per Bundle / read / practitioner's Bundle request: gateway ${m('gateway.warmup.bundle.cpu_us')} / ${m('gateway.warmup.read.cpu_us')} / ${m('gateway.warmup.panel.cpu_us')}, bare ${m('bare.warmup.bundle.cpu_us')} / ${m('bare.warmup.read.cpu_us')} / ${m('bare.warmup.panel.cpu_us')}`, `errors ${(rows['gateway.errors'] ?? []).reduce((a, b) => a + b, 0)}`].join('\n')}\n`,
      );
      return;
    }

    // logins: 20 in flight over 10 accounts (at most 5 attempts in flight per account count against its limit)
    const gatewayPid = processTree(gateway.pid as number).at(-1) as number;
    const loginOnce = async (i: number, pool = gw) => {
      const response = await post(pool, '/auth/login', {
        email: emails[1 + (i % LOGIN_ACCOUNTS)],
        password: PASSWORD,
      });
      if (response.status !== 200) throw new Error(`login answered ${response.status}`);
    };
    /** `count` logins, 20 in flight: logins/s, and the main thread's CPU per login when `mainPid` is given. */
    const loginLoop = async (count: number, pool = gw, mainPid?: number) => {
      const main = mainPid ? [`${mainPid}/task/${mainPid}`] : [];
      const mainBefore = cpuMicros(main);
      let n = 0;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: 20 }, async () => {
          while (n < count) await loginOnce(n++, pool);
        }),
      );
      return {
        perSecond: Math.round(count / ((performance.now() - started) / 1000)),
        mainUs: Math.round((cpuMicros(main) - mainBefore) / count),
      };
    };
    // a login runs its handlers once, so V8 optimises them only after several hundred logins
    const loginsWarm = await loginLoop(LOGIN_WARM_UP, gw, gatewayPid);
    const loginsOne = await loginLoop(LOGINS, gw, gatewayPid);

    const quiet = await openLoop(gwTarget, read, patient, 250, STORM_SECONDS);
    let storming = true;
    let stormed = 0;
    const storm = Promise.all(
      Array.from({ length: 20 }, async () => {
        while (storming) await loginOnce(stormed++);
      }),
    );
    const loud = await openLoop(gwTarget, read, patient, 250, STORM_SECONDS);
    storming = false;
    await storm;
    if (LOGINS_ONLY) {
      process.stdout.write(
        `logins/s ${loginsOne.perSecond}, main thread ${loginsOne.mainUs} µs per login (over the ${LOGIN_WARM_UP} warm-up logins: ${loginsWarm.perSecond}/s, ${loginsWarm.mainUs} µs); read p99 at 250 req/s ${quiet.p99} ms quiet, ${loud.p99} ms with 20 logins in flight (${Math.round((loud.p99 / quiet.p99) * 100) / 100}×; p50 ${quiet.p50} / ${loud.p50} ms); errors ${quiet.errors + loud.errors}\n`,
      );
      return;
    }

    // every core: WORKERS=2 beside the WORKERS=1 gateway, on the same DATA_DIR (the accounts and
    // tokens stay valid), their closed loops interleaved (one, two, one, two ...): measured apart,
    // minutes from each other, a phase of the machine moved one and not the other
    const two = await startGateway(2, one.port + 1);
    running.push(two);
    // each worker warms up as the single one did
    await closedLoop(two.target, search, patient, WARM_UP * 2);
    await closedLoop(two.target, read, patient, WARM_UP * 2);
    const pair = [
      ['workers1', one.target],
      ['workers2', two.target],
    ] as const;
    for (let round = 0; round < ROUNDS; round++) {
      // the order flips every round: neither goes first each time (behind the other's last audit flush)
      for (const [key, t] of round % 2 === 0 ? pair : [...pair].reverse()) {
        const bundle = await closedLoop(t, search, patient);
        add(`${key}.bundle.rps`, bundle.rps);
        add(`${key}.bundle.cpu_us`, bundle.cpuUsPerRequest);
        add(`${key}.bundle.busy_cores`, bundle.busyCores);
        const single = await closedLoop(t, read, patient);
        add(`${key}.read.rps`, single.rps);
        add(`${key}.read.cpu_us`, single.cpuUsPerRequest);
        add(`${key}.read.busy_cores`, single.busyCores);
      }
    }
    // the logins of WORKERS=2 alone, as WORKERS=1's were
    await one.stop();
    await loginLoop(LOGIN_WARM_UP * 2, two.pool);
    const loginsTwo = await loginLoop(LOGINS, two.pool);

    const summary = {
      node: process.version,
      cpus: os.cpus().length,
      rounds: ROUNDS,
      requests_per_row: REQUESTS,
      bundle_bytes: bundleBytes,
      panel_size: PANEL_SIZE,
      warm_up: {
        requests_per_kind: WARM_UP,
        cpu_us_per_request: {
          bundle: { gateway: m('gateway.warmup.bundle.cpu_us'), bare: m('bare.warmup.bundle.cpu_us') },
          read: { gateway: m('gateway.warmup.read.cpu_us'), bare: m('bare.warmup.read.cpu_us') },
          panel: { gateway: m('gateway.warmup.panel.cpu_us'), bare: m('bare.warmup.panel.cpu_us') },
        },
      },
      cpu_us_per_request: {
        bundle: {
          gateway: m('gateway.bundle.cpu_us'),
          bare: m('bare.bundle.cpu_us'),
          ratio: ratio(m('gateway.bundle.cpu_us'), m('bare.bundle.cpu_us')),
        },
        read: {
          gateway: m('gateway.read.cpu_us'),
          bare: m('bare.read.cpu_us'),
          ratio: ratio(m('gateway.read.cpu_us'), m('bare.read.cpu_us')),
        },
        panel: {
          gateway: m('gateway.panel.cpu_us'),
          bare: m('bare.panel.cpu_us'),
          ratio: ratio(m('gateway.panel.cpu_us'), m('bare.panel.cpu_us')),
        },
      },
      essential_work: {
        cpu_us_per_request: {
          bundle: m('essential.bundle.cpu_us'),
          read: m('essential.read.cpu_us'),
          bundle_ratio_to_bare: ratio(m('essential.bundle.cpu_us'), m('bare.bundle.cpu_us')),
          read_ratio_to_bare: ratio(m('essential.read.cpu_us'), m('bare.read.cpu_us')),
        },
        throughput_rps: { bundle: m('essential.bundle.rps'), read: m('essential.read.rps') },
      },
      gateway_floor_cpu_us_per_request: {
        healthz: m('gateway.healthz.cpu_us'),
        auth_me: m('gateway.me.cpu_us'),
      },
      throughput_rps: {
        bundle: {
          gateway: m('gateway.bundle.rps'),
          bare: m('bare.bundle.rps'),
          ratio: ratio(m('gateway.bundle.rps'), m('bare.bundle.rps')),
        },
        read: {
          gateway: m('gateway.read.rps'),
          bare: m('bare.read.rps'),
          ratio: ratio(m('gateway.read.rps'), m('bare.read.rps')),
        },
        panel: {
          gateway: m('gateway.panel.rps'),
          bare: m('bare.panel.rps'),
          ratio: ratio(m('gateway.panel.rps'), m('bare.panel.rps')),
        },
      },
      added_latency_ms: {
        at_250: {
          p50: Math.round((m('gateway.bundle.250.p50') - m('bare.bundle.250.p50')) * 100) / 100,
          p99: Math.round((m('gateway.bundle.250.p99') - m('bare.bundle.250.p99')) * 100) / 100,
        },
        at_1000: {
          p50: Math.round((m('gateway.bundle.1000.p50') - m('bare.bundle.1000.p50')) * 100) / 100,
          p99: Math.round((m('gateway.bundle.1000.p99') - m('bare.bundle.1000.p99')) * 100) / 100,
        },
        bare_at_1000: { p50: m('bare.bundle.1000.p50'), p99: m('bare.bundle.1000.p99') },
      },
      logins: {
        per_second: loginsOne.perSecond,
        main_thread_us_per_login: loginsOne.mainUs,
        warm_up: {
          logins: LOGIN_WARM_UP,
          per_second: loginsWarm.perSecond,
          main_thread_us_per_login: loginsWarm.mainUs,
        },
      },
      read_p99_ms_at_250: {
        quiet: quiet.p99,
        with_20_logins_in_flight: loud.p99,
        ratio: ratio(loud.p99, quiet.p99),
      },
      workers_2: {
        bundle_rps: m('workers2.bundle.rps'),
        read_rps: m('workers2.read.rps'),
        // WORKERS=1's throughput in the same interleaving (not its rounds beside the bare proxy)
        workers_1_bundle_rps: m('workers1.bundle.rps'),
        workers_1_read_rps: m('workers1.read.rps'),
        // each gateway's own CPU per request in those loops (all its processes and threads)
        cpu_us_per_request: {
          workers_1: { bundle: m('workers1.bundle.cpu_us'), read: m('workers1.read.cpu_us') },
          workers_2: { bundle: m('workers2.bundle.cpu_us'), read: m('workers2.read.cpu_us') },
        },
        // how many of the cores the whole machine kept busy in those loops (client and upstream included)
        busy_cores: {
          workers_1: { bundle: m('workers1.bundle.busy_cores'), read: m('workers1.read.busy_cores') },
          workers_2: { bundle: m('workers2.bundle.busy_cores'), read: m('workers2.read.busy_cores') },
        },
        bundle_ratio_to_1: ratio(m('workers2.bundle.rps'), m('workers1.bundle.rps')),
        read_ratio_to_1: ratio(m('workers2.read.rps'), m('workers1.read.rps')),
        logins_per_second: loginsTwo.perSecond,
      },
      external_upstream_workers_1: { start_to_ready_ms: readyMs, ...idleMemory },
      embedded_default: {
        workers: os.availableParallelism(),
        start_to_ready_ms: embedded.readyMs,
        ...embedded.memory,
        settled: embedded.settledMemory ?? null,
      },
      embedded_workers_1: {
        start_to_ready_ms: embeddedOne.readyMs,
        ...embeddedOne.memory,
      },
      embedded_default_first_admin: {
        start_to_ready_ms: embeddedAdmin.readyMs,
        ...embeddedAdmin.memory,
      },
      // measured only where NODE_EXTRA_CA_CERTS is set (EXTRA_CA_CERTS above)
      embedded_default_without_extra_ca_certs: embeddedNoCaCerts
        ? {
            start_to_ready_ms: embeddedNoCaCerts.readyMs,
            ...embeddedNoCaCerts.memory,
          }
        : null,
      errors:
        (rows['gateway.errors'] ?? []).reduce((a, b) => a + b, 0) +
        (rows['bare.errors'] ?? []).reduce((a, b) => a + b, 0) +
        (rows['essential.errors'] ?? []).reduce((a, b) => a + b, 0),
    };
    fs.mkdirSync(path.join(ROOT, 'bench-results'), { recursive: true });
    fs.writeFileSync(
      path.join(ROOT, 'bench-results/hotpath.json'),
      `${JSON.stringify({ summary, rows }, null, 2)}\n`,
    );
    const s = summary;
    // an added latency below the bare proxy's is a negative difference: `+-1.31` read as an addition
    const signed = (ms: number) => (ms < 0 ? `−${-ms}` : `+${ms}`);
    process.stdout.write(
      [
        '| figure | gateway | bare proxy | ratio |',
        '|---|---|---|---|',
        `| CPU per Bundle request | ${s.cpu_us_per_request.bundle.gateway} µs | ${s.cpu_us_per_request.bundle.bare} µs | ${s.cpu_us_per_request.bundle.ratio}× |`,
        `| CPU per single read | ${s.cpu_us_per_request.read.gateway} µs | ${s.cpu_us_per_request.read.bare} µs | ${s.cpu_us_per_request.read.ratio}× |`,
        `| CPU per Bundle request of a practitioner (20 patients of a panel of ${PANEL_SIZE} a page) | ${s.cpu_us_per_request.panel.gateway} µs | ${s.cpu_us_per_request.panel.bare} µs | ${s.cpu_us_per_request.panel.ratio}× |`,
        `| the same over the warm-up (first ${WARM_UP} requests of each kind), Bundle / read / practitioner's Bundle | ${s.warm_up.cpu_us_per_request.bundle.gateway} / ${s.warm_up.cpu_us_per_request.read.gateway} / ${s.warm_up.cpu_us_per_request.panel.gateway} µs | ${s.warm_up.cpu_us_per_request.bundle.bare} / ${s.warm_up.cpu_us_per_request.read.bare} / ${s.warm_up.cpu_us_per_request.panel.bare} µs | |`,
        `| the essential work alone (bench/essentialProxy.mjs), CPU per Bundle / read | ${s.essential_work.cpu_us_per_request.bundle} / ${s.essential_work.cpu_us_per_request.read} µs | | ${s.essential_work.cpu_us_per_request.bundle_ratio_to_bare}× / ${s.essential_work.cpu_us_per_request.read_ratio_to_bare}× |`,
        `| the gateway's floor: CPU per \`/healthz\` / \`/auth/me\` request | ${s.gateway_floor_cpu_us_per_request.healthz} / ${s.gateway_floor_cpu_us_per_request.auth_me} µs | | |`,
        `| throughput, ${CONNECTIONS} connections, Bundle / read | ${s.throughput_rps.bundle.gateway} / ${s.throughput_rps.read.gateway} req/s | ${s.throughput_rps.bundle.bare} / ${s.throughput_rps.read.bare} req/s | ${s.throughput_rps.bundle.ratio}× / ${s.throughput_rps.read.ratio}× |`,
        `| throughput, ${CONNECTIONS} connections, a practitioner's Bundle | ${s.throughput_rps.panel.gateway} req/s | ${s.throughput_rps.panel.bare} req/s | ${s.throughput_rps.panel.ratio}× |`,
        `| added latency at 250 req/s, Bundle p50 / p99 | ${signed(s.added_latency_ms.at_250.p50)} / ${signed(s.added_latency_ms.at_250.p99)} ms | | |`,
        `| added latency at 1,000 req/s, Bundle p50 / p99 | ${signed(s.added_latency_ms.at_1000.p50)} / ${signed(s.added_latency_ms.at_1000.p99)} ms | p50 ${s.added_latency_ms.bare_at_1000.p50} / p99 ${s.added_latency_ms.bare_at_1000.p99} ms | |`,
        `| logins/s (20 in flight), WORKERS=1 / 2 | ${s.logins.per_second} / ${s.workers_2.logins_per_second} | | main thread ${s.logins.main_thread_us_per_login} µs per login |`,
        `| the same over the ${LOGIN_WARM_UP} warm-up logins, WORKERS=1 | ${s.logins.warm_up.per_second} | | main thread ${s.logins.warm_up.main_thread_us_per_login} µs per login |`,
        `| WORKERS=2 throughput, Bundle / read (WORKERS=1 in the same interleaving) | ${s.workers_2.bundle_rps} / ${s.workers_2.read_rps} req/s (${s.workers_2.workers_1_bundle_rps} / ${s.workers_2.workers_1_read_rps}) | | ${s.workers_2.bundle_ratio_to_1}× / ${s.workers_2.read_ratio_to_1}× of WORKERS=1 |`,
        `| the gateway's CPU per request in those loops, WORKERS=1 / 2, Bundle; read | ${s.workers_2.cpu_us_per_request.workers_1.bundle} / ${s.workers_2.cpu_us_per_request.workers_2.bundle}; ${s.workers_2.cpu_us_per_request.workers_1.read} / ${s.workers_2.cpu_us_per_request.workers_2.read} µs | | |`,
        `| the machine's busy cores in those loops (of ${os.availableParallelism()}; client and upstream included), WORKERS=1 / 2, Bundle; read | ${s.workers_2.busy_cores.workers_1.bundle} / ${s.workers_2.busy_cores.workers_2.bundle}; ${s.workers_2.busy_cores.workers_1.read} / ${s.workers_2.busy_cores.workers_2.read} | | |`,
        `| read p99 at 250 req/s, with 20 logins in flight vs none | ${s.read_p99_ms_at_250.with_20_logins_in_flight} vs ${s.read_p99_ms_at_250.quiet} ms | | ${s.read_p99_ms_at_250.ratio}× |`,
        `| \`npm start\` → ready; idle RSS of the process tree (distinct: each physical page once), embedded default (WORKERS=${s.embedded_default.workers}) | ${s.embedded_default.start_to_ready_ms} ms; ${memoryCell(s.embedded_default)} | | |`,
        ...(s.embedded_default.settled
          ? [
              `| the same tree ${SETTLE_MS / 1000} s after ready (V8 has given back what the start grew) | ${memoryCell(s.embedded_default.settled)} | | |`,
            ]
          : []),
        `| the same with WORKERS=1 | ${s.embedded_workers_1.start_to_ready_ms} ms; ${memoryCell(s.embedded_workers_1)} | | |`,
        `| the embedded default's first start with ADMIN_EMAIL/ADMIN_PASSWORD (the quickstart) | ${s.embedded_default_first_admin.start_to_ready_ms} ms; ${memoryCell(s.embedded_default_first_admin)} | | |`,
        ...(s.embedded_default_without_extra_ca_certs
          ? [
              `| the embedded default without this machine's NODE_EXTRA_CA_CERTS (Node 20 then builds every process's root store at start) | ${s.embedded_default_without_extra_ca_certs.start_to_ready_ms} ms; ${memoryCell(s.embedded_default_without_extra_ca_certs)} | | |`,
            ]
          : []),
        `| WORKERS=1 with an external FHIR server | ${s.external_upstream_workers_1.start_to_ready_ms} ms; ${memoryCell(s.external_upstream_workers_1)} | | |`,
        `| errors | ${s.errors} | | |`,
        '',
      ].join('\n'),
    );
  } finally {
    for (const started of running) await started.stop().catch(() => undefined);
    bare.child.kill();
    essentialProcess?.kill();
    await essentialPool?.close();
    upstream.child.kill();
    await bareTarget.pool.close();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
