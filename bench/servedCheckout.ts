import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { awaitCode, BENCH_ADMIN, type Caller, caller, cpuMicros, gatewayEnv, waitFor } from './lib.js';

/**
 * A checkout of the gateway built and served as `node dist/main.js` (WORKERS=1) in front of the
 * static upstream, with a patient and a practitioner provisioned and signed up through its API:
 * what bench:compare and bench:perf measure.
 */

export const IN_FLIGHT = 20;
const PATIENT_EMAIL = 'bench-patient@example.com';
const PRACTITIONER_EMAIL = 'bench-practitioner@example.com';
const PASSWORD = 'a long and plain passphrase';

/** A request measured, and whose token it carries. */
export interface Measured {
  readonly url: string;
  readonly as: 'patient' | 'practitioner';
}

/**
 * The requests measured: a patient's read of their own record, and their search answering 20
 * entries; a practitioner's search answering 20 patients of their panel of 2,000 (the static
 * upstream's next 20 on each request); the gateway's floor: no upstream (healthz), and a token
 * with the caller's lookup and a DTO (me).
 */
export const MEASURED: Record<string, Measured> = {
  read: { url: '/fhir/Patient/bench-patient-1', as: 'patient' },
  bundle: { url: '/fhir/Observation?_count=20', as: 'patient' },
  panel: { url: '/fhir/Observation?_count=20', as: 'practitioner' },
  healthz: { url: '/healthz', as: 'patient' },
  me: { url: '/auth/me', as: 'patient' },
};

export interface Served {
  readonly checkout: string;
  readonly child: ChildProcess;
  readonly client: Caller;
  readonly tokens: Readonly<Record<Measured['as'], string>>;
}

/** One checkout built and serving, with a signed-up patient's and practitioner's tokens; `nodeFlags` go to its `node`. */
export async function serve(
  checkout: string,
  port: number,
  upstreamUrl: string,
  nodeFlags: readonly string[] = [],
): Promise<Served> {
  execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: checkout });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-compare-'));
  const child = spawn(process.execPath, [...nodeFlags, 'dist/main.js'], {
    cwd: checkout,
    env: gatewayEnv({ port, dataDir, upstreamUrl, workers: 1 }),
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const client = caller(`http://127.0.0.1:${port}`, IN_FLIGHT * 2);
  await waitFor(async () => (await client.call('GET', '/readyz')).status === 200, `${checkout} to be ready`);
  const admin = (await client.call('POST', '/auth/login', undefined, BENCH_ADMIN)).json().token as string;
  /** Provisioned by the admin, then signed up with the mailed code: the account's access token. */
  const account = async (kind: Measured['as'], record: { name: string; email: string; dob?: string }) => {
    const created = await client.call('POST', `/fhir/${kind}`, admin, record);
    if (created.status !== 201)
      throw new Error(`${checkout}: provisioning the ${kind} answered ${created.status}`);
    const code = await awaitCode(dataDir, record.email);
    const signup = { email: record.email, access_code: code, password: PASSWORD };
    const signed = await client.call('POST', '/auth/signup', undefined, signup);
    if (signed.status !== 201)
      throw new Error(`${checkout}: signing up the ${kind} answered ${signed.status}`);
    return signed.json().token as string;
  };
  const tokens = {
    patient: await account('patient', { name: 'Bench Patient', email: PATIENT_EMAIL, dob: '1980-04-12' }),
    practitioner: await account('practitioner', { name: 'Dr Bench', email: PRACTITIONER_EMAIL }),
  };
  // the practitioner's figure is of a whole page: every entry kept, none dropped as outside the panel
  const page = await client.call('GET', MEASURED.panel?.url ?? '', tokens.practitioner);
  const shown = (page.json() as { entry?: unknown[] }).entry?.length;
  if (page.status !== 200 || shown !== 20)
    throw new Error(`${checkout}: the practitioner's search answered ${page.status} with ${shown} entries`);
  return { checkout, child, client, tokens };
}

/** `count` calls of `send`, `lanes` at a time, each lane starting its next when its last is answered. */
async function inFlight(lanes: number, count: number, send: () => Promise<void>): Promise<void> {
  let sent = 0;
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      while (sent++ < count) await send();
    }),
  );
}

/** `count` requests, IN_FLIGHT at a time: CPU µs per request of the gateway process. */
export async function closedLoop(server: Served, request: Measured, count: number): Promise<number> {
  const gateway = [String(server.child.pid)];
  const before = cpuMicros(gateway);
  const { url, as } = request;
  await inFlight(IN_FLIGHT, count, async () => {
    const { status } = await server.client.call('GET', url, server.tokens[as]);
    if (status !== 200) throw new Error(`${server.checkout}: ${url} as the ${as} answered ${status}`);
  });
  return Math.round((cpuMicros(gateway) - before) / count);
}

/** A login is at most this many in flight: the account's limit counts attempts until they succeed (5). */
const LOGINS_IN_FLIGHT = 5;

/** `count` logins of the signed-up patient, LOGINS_IN_FLIGHT at a time: CPU µs per login of the main thread. */
export async function loginLoop(server: Served, count: number): Promise<number> {
  const pid = String(server.child.pid);
  const mainThread = [`${pid}/task/${pid}`];
  const before = cpuMicros(mainThread);
  const credentials = { email: PATIENT_EMAIL, password: PASSWORD };
  await inFlight(LOGINS_IN_FLIGHT, count, async () => {
    const { status } = await server.client.call('POST', '/auth/login', undefined, credentials);
    if (status !== 200) throw new Error(`${server.checkout}: a login answered ${status}`);
  });
  return Math.round((cpuMicros(mainThread) - before) / count);
}

/** Stops a served checkout. */
export async function stop(server: Served): Promise<void> {
  await server.client.close();
  server.child.kill('SIGTERM');
}
