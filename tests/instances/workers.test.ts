import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EmbeddedFhirServer, startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';
import { startHoldingProxy } from '../helpers/fakeUpstream.js';
import { codeIn, mailsTo } from '../helpers/journey.js';
import { startPostgresProxy } from '../helpers/pgProxy.js';
import { createTestSchema, TEST_DATABASE_URL } from '../helpers/postgres.js';
import {
  freePort,
  isAlive,
  nodeProcessesUnder,
  type RunningProcess,
  runNpm,
  startGatewayProcess,
  waitFor,
} from '../helpers/processes.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';
import { tempDir } from '../helpers/tempDir.js';

/**
 * WORKERS=2 (src/cluster.ts) as `npm start` runs it on the embedded default: a primary that owns
 * the migrations and the embedded FHIR server, two serving processes on one port. Whichever worker
 * a connection lands on, it must honour the other's tokens and cursors (one signing key and one
 * app secret in DATA_DIR, generated once), mails go out once (only worker 0 runs the lanes), a
 * worker killed by SIGKILL is replaced, and /metrics adds up every worker.
 */

const ADMIN_EMAIL = 'admin@example.com';
const ADMIN_PASSWORD = 'correct horse battery staple';
const PASSWORD = 'a long and plain passphrase';
const METRICS_TOKEN = 'workers-metrics-token-0123456789abcdef';

interface Answer {
  readonly status: number;
  readonly json: Record<string, unknown>;
}

describe('WORKERS=2 on the embedded default', () => {
  let smtp: SmtpCapture;
  let proc: RunningProcess;
  let url: string;
  let dataDir: string;
  let adminToken: string;

  const call = async (
    path: string,
    init: { json?: unknown; token?: string; headers?: Record<string, string> } = {},
  ): Promise<Answer> => {
    const headers: Record<string, string> = { ...init.headers };
    if (init.json !== undefined) headers['content-type'] = 'application/json';
    if (init.token) headers.authorization = `Bearer ${init.token}`;
    const response = await fetch(`${url}${path}`, {
      method: init.json === undefined ? 'GET' : 'POST',
      headers,
      ...(init.json !== undefined ? { body: JSON.stringify(init.json) } : {}),
    });
    const text = await response.text();
    return { status: response.status, json: text.startsWith('{') ? JSON.parse(text) : { text } };
  };

  /** Waits until `victim` is gone and a new worker runs in its place. */
  const replaced = (victim: number) =>
    waitFor(
      'a replacement worker',
      async () => {
        const pids = nodeProcessesUnder(proc.child.pid as number);
        return pids.length === 3 && !pids.includes(victim);
      },
      15_000,
      proc,
    );

  /** Fresh connections, so the kernel spreads them over both workers; 0 for a connection lost. */
  const many = (n: number, path: string, token: string) =>
    Promise.all(
      Array.from({ length: n }, () =>
        fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}`, connection: 'close' } }).then(
          async (r) => {
            await r.arrayBuffer();
            return r.status;
          },
          () => 0,
        ),
      ),
    );

  beforeAll(async () => {
    smtp = await startSmtpCapture();
    dataDir = tempDir();
    ({ proc, url } = await startGatewayProcess({
      WORKERS: '2',
      DATA_DIR: dataDir,
      SMTP_URL: smtp.url,
      ADMIN_EMAIL,
      ADMIN_PASSWORD,
      METRICS_TOKEN,
    }));
    const login = await call('/auth/login', { json: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD } });
    expect(login.status).toBe(200);
    adminToken = login.json.token as string;
  }, 120_000);

  afterAll(async () => {
    await proc?.kill('SIGTERM');
    await smtp?.close();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it('runs a primary and two serving processes', () => {
    // npm -> node primary -> 2 workers (the embedded FHIR server runs in the primary)
    expect(nodeProcessesUnder(proc.child.pid as number)).toHaveLength(3);
  });

  it('walks the journey: create, one mail, signup, observations — every worker honours every token', async () => {
    const email = `workers-${randomUUID().slice(0, 8)}@example.com`;
    const created = await call('/fhir/patient', {
      token: adminToken,
      json: { name: 'Wendy Workers', email, dob: '1980-04-12' },
    });
    expect(created.status).toBe(201);
    const [mail] = await mailsTo(smtp, email, 1, 15_000);
    const signup = await call('/auth/signup', {
      json: { email, access_code: codeIn(mail!), password: PASSWORD },
    });
    expect(signup.status).toBe(201);
    const token = signup.json.token as string;
    // 40 fresh connections land on both workers: a token signed by one verifies on the other
    expect(new Set(await many(40, '/patient/observations', token))).toEqual(new Set([200]));
    expect(new Set(await many(40, '/auth/me', adminToken))).toEqual(new Set([200]));
    // only worker 0 delivers: the mail went out once
    await new Promise((r) => setTimeout(r, 1_500));
    expect(smtp.messages.filter((m) => JSON.stringify(m.to ?? '').includes(email))).toHaveLength(1);
    // the process log names no address: not the patient's, not the first admin's from ADMIN_EMAIL
    expect(proc.output()).toContain('first admin account (ADMIN_EMAIL)');
    for (const address of [email, ADMIN_EMAIL]) expect(proc.output()).not.toContain(address);
  });

  it("drops a patient moved away from the former practitioner's view on every worker at once", async () => {
    const signedUp = async (path: string, body: Record<string, unknown>) => {
      const created = await call(path, { token: adminToken, json: body });
      expect(created.status).toBe(201);
      const [mail] = await mailsTo(smtp, body.email as string, 1, 15_000);
      const signup = await call('/auth/signup', {
        json: { email: body.email, access_code: codeIn(mail!), password: PASSWORD },
      });
      expect(signup.status).toBe(201);
      return { fhirId: created.json.fhir_id as string, token: signup.json.token as string };
    };
    const tag = randomUUID().slice(0, 8);
    const gp = await signedUp('/fhir/practitioner', { name: 'Gail Panel', email: `gp-${tag}@example.com` });
    const patient = await signedUp('/fhir/patient', {
      name: 'Moira Moved',
      email: `moved-${tag}@example.com`,
      dob: '1975-02-03',
      general_practitioner_id: gp.fhirId,
    });
    const observation = await call('/fhir/Observation', {
      token: adminToken,
      json: {
        resourceType: 'Observation',
        status: 'final',
        code: { text: 'Pulse' },
        subject: { reference: `Patient/${patient.fhirId}` },
      },
    });
    expect(observation.status).toBe(201);
    // an Observation, not the Patient: a practitioner's read of one is decided with the panel cache
    const path = `/fhir/Observation/${observation.json.id}`;
    // fresh connections land on both workers: each one learns that the patient is on the panel
    expect(new Set(await many(30, path, gp.token))).toEqual(new Set([200]));
    const patientPath = `/fhir/Patient/${patient.fhirId}`;
    const record = (await call(patientPath, { token: adminToken })).json;
    const { generalPractitioner: _gp, ...unassigned } = record;
    const moved = await fetch(`${url}${patientPath}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/fhir+json' },
      body: JSON.stringify(unassigned),
    });
    expect(moved.status).toBe(200);
    // docs/security.md: a patient changed through the gateway is forgotten at once, by every worker
    expect(new Set(await many(30, path, gp.token))).toEqual(new Set([404]));
  });

  it('serves the SMART authorization server on every worker: the bundle loads oidc-provider', async () => {
    // the served bundle is CommonJS (scripts/runBundle.mjs): its interop with the ES-module-only
    // oidc-provider broke every /oauth route there once, while the suite's in-process gateways passed
    const answers = await Promise.all(
      Array.from({ length: 10 }, () =>
        fetch(`${url}/oauth/.well-known/openid-configuration`, { headers: { connection: 'close' } }).then(
          async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> }),
        ),
      ),
    );
    for (const { status, body } of answers) {
      expect(status).toBe(200);
      expect(body.authorization_endpoint).toBe(`${url}/oauth/authorize`);
    }
    const authorize = await fetch(`${url}/oauth/authorize?client_id=unknown-app&response_type=code`, {
      redirect: 'manual',
    });
    expect(authorize.status).toBeLessThan(500);
  });

  it('adds up every worker in /metrics', async () => {
    const before = await call('/metrics', { token: METRICS_TOKEN });
    expect(before.status).toBe(200);
    const count = (text: string) =>
      Number(
        /^fhir_facade_http_requests_total\{method="GET",route="\/auth\/me",status="200"\} (\d+)$/m.exec(
          text,
        )?.[1] ?? 0,
      );
    const start = count(before.json.text as string);
    await many(30, '/auth/me', adminToken);
    const after = await call('/metrics', { token: METRICS_TOKEN });
    // each scrape lands on one worker, yet counts the requests both served
    expect(count(after.json.text as string) - start).toBe(30);
  });

  it("lists every worker's refusals in /admin/audit at once, not a second later", async () => {
    const before = await call(`/admin/audit?action=access.denied&limit=200`, { token: adminToken });
    expect(before.status).toBe(200);
    const counted = (page: Answer) => (page.json.entries as unknown[]).length;
    // refusals on fresh connections land on both workers; each buffers its own for up to a second
    const refused = await many(30, '/patient/profile', 'not-a-token');
    expect(new Set(refused)).toEqual(new Set([401]));
    const after = await call(`/admin/audit?action=access.denied&limit=200`, { token: adminToken });
    expect(counted(after) - counted(before)).toBe(30);
  });

  it('replaces a worker stopped by SIGTERM after its shutdown, logged as an exit, not as a crash', async () => {
    const [, , victim] = nodeProcessesUnder(proc.child.pid as number);
    process.kill(victim as number, 'SIGTERM');
    await replaced(victim as number);
    const line = proc
      .output()
      .split('\n')
      .find((l) => l.includes('gateway worker exited; starting another'));
    expect(line).toBeDefined();
    expect(JSON.parse(line as string)).toMatchObject({ level: 40, code: 0 });
    // the replacement serves before the next test kills the other worker
    const port = new URL(url).port;
    await waitFor('the replacement listening', async () => {
      const workers = nodeProcessesUnder(proc.child.pid as number).slice(1);
      const listeners = execFileSync('ss', ['-ltnpH', `sport = :${port}`], { encoding: 'utf8' });
      return workers.every((pid) => listeners.includes(`pid=${pid},`));
    });
  });

  it('replaces a worker killed by SIGKILL, and keeps serving meanwhile', async () => {
    const [, victim] = nodeProcessesUnder(proc.child.pid as number);
    process.kill(victim as number, 'SIGKILL');
    // connections the killed worker had taken are lost (0); the other worker answers the rest
    const statuses = await many(20, '/auth/me', adminToken);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThan(0);
    expect(statuses.filter((s) => s !== 200 && s !== 0)).toEqual([]);
    await replaced(victim as number);
    expect(proc.output()).toContain('gateway worker died; starting another');
    await waitFor('every request answered 200 again', async () =>
      (await many(20, '/auth/me', adminToken)).every((s) => s === 200),
    );
  });
});

describe('WORKERS=2 in front of an external FHIR server', () => {
  let fhir: EmbeddedFhirServer;
  let proc: RunningProcess;
  let url: string;
  let dataDir: string;

  beforeAll(async () => {
    fhir = await startEmbeddedFhirServer({ dataDir: tempDir() });
    dataDir = tempDir();
    ({ proc, url } = await startGatewayProcess({
      WORKERS: '2',
      DATA_DIR: dataDir,
      FHIR_BASE_URL: fhir.baseUrl,
      ADMIN_EMAIL,
      ADMIN_PASSWORD,
      WORKER_WATCHDOG_SECONDS: '3',
    }));
  }, 120_000);

  afterAll(async () => {
    await proc?.kill('SIGTERM');
    await fhir?.close();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it('kills and replaces a worker whose event loop stopped answering (SIGSTOP): connections it took would hang', async () => {
    const [primary, ...workers] = nodeProcessesUnder(proc.child.pid as number);
    const [frozen] = workers;
    process.kill(frozen as number, 'SIGSTOP');
    await waitFor(
      'the frozen worker replaced',
      async () => {
        const pids = nodeProcessesUnder(proc.child.pid as number);
        return pids.length === 3 && pids[0] === primary && !pids.includes(frozen as number);
      },
      20_000,
      proc,
    );
    expect(proc.output()).toContain('gateway worker stopped answering; killing it');
    await waitFor('the gateway to serve again', async () => (await fetch(`${url}/readyz`)).status === 200);
    // the workers that answer are left alone
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    expect(proc.output().match(/stopped answering/g)).toHaveLength(1);
  });

  it('replaces both workers killed at once: the primary stays up, though nothing else runs in it', async () => {
    const [primary, ...workers] = nodeProcessesUnder(proc.child.pid as number);
    expect(workers).toHaveLength(2);
    for (const worker of workers) process.kill(worker, 'SIGKILL');
    await waitFor(
      'two replacement workers',
      async () => {
        const pids = nodeProcessesUnder(proc.child.pid as number);
        return pids.length === 3 && pids[0] === primary && !workers.some((w) => pids.includes(w));
      },
      15_000,
      proc,
    );
    await waitFor('the gateway to serve again', async () => (await fetch(`${url}/readyz`)).status === 200);
    expect(proc.child.exitCode).toBeNull();
  });
});

describe('WORKERS=2 stopping with a Patient write in flight', () => {
  it('keeps the workers in touch while they drain: the write forgets the patient on every worker at once', async () => {
    const fhir = await startEmbeddedFhirServer({ dataDir: tempDir() });
    const proxy = await startHoldingProxy(
      fhir.baseUrl,
      (method, url) => method === 'PUT' && url.includes('/Patient/'),
    );
    const dataDir = tempDir();
    const { proc, url } = await startGatewayProcess({
      WORKERS: '2',
      DATA_DIR: dataDir,
      FHIR_BASE_URL: `${proxy.url}${new URL(fhir.baseUrl).pathname}`,
      ADMIN_EMAIL,
      ADMIN_PASSWORD,
    });
    try {
      const login = await fetch(`${url}/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD }),
      });
      const { token } = (await login.json()) as { token: string };
      const auth = { authorization: `Bearer ${token}` };
      const created = await fetch(`${url}/fhir/patient`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'Drain Dee', email: 'drain@example.com', dob: '1990-01-01' }),
      });
      const { fhir_id: id } = (await created.json()) as { fhir_id: string };
      const patient = await (await fetch(`${url}/fhir/Patient/${id}`, { headers: auth })).json();
      const write = fetch(`${url}/fhir/Patient/${id}`, {
        method: 'PUT',
        headers: { ...auth, 'content-type': 'application/fhir+json' },
        body: JSON.stringify(patient),
      });
      await proxy.answered;
      // the stop begins while the write waits on the network: the primary must keep relaying
      const stopped = proc.kill('SIGTERM');
      await new Promise((resolve) => setTimeout(resolve, 500));
      const released = Date.now();
      proxy.release();
      expect((await write).status).toBe(200);
      // the other worker's answer came through the primary (unanswered, the write waits 2 s)
      expect(Date.now() - released).toBeLessThan(1_500);
      await stopped;
      expect(proc.output()).not.toContain('another worker did not answer in time');
    } finally {
      await proc.kill('SIGKILL');
      await proxy.close();
      await fhir.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 90_000);
});

describe('WORKERS=2 stopping while a worker cannot', () => {
  it('kills a worker that does not stop within SHUTDOWN_TIMEOUT_MS, so the whole tree exits', async () => {
    const fhir = await startEmbeddedFhirServer({ dataDir: tempDir() });
    const dataDir = tempDir();
    const { proc } = await startGatewayProcess({
      WORKERS: '2',
      DATA_DIR: dataDir,
      FHIR_BASE_URL: fhir.baseUrl,
      ADMIN_EMAIL,
      ADMIN_PASSWORD,
      SHUTDOWN_TIMEOUT_MS: '1000',
      WORKER_WATCHDOG_SECONDS: '0',
    });
    try {
      const [, frozen] = nodeProcessesUnder(proc.child.pid as number);
      process.kill(frozen as number, 'SIGSTOP');
      const started = Date.now();
      await proc.kill('SIGTERM');
      await waitFor('every process gone', async () => !isAlive(frozen as number), 15_000);
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(proc.output()).toContain('gateway worker did not stop in time; killing it');
    } finally {
      await proc.kill('SIGKILL');
      await fhir.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('WORKERS=2 whose start fails', () => {
  it('stops the workers it forked before it migrated when the migration fails, and exits with the reason', async () => {
    const dataDir = tempDir();
    // the workers boot while the primary migrates (src/cluster.ts): this migration fails
    fs.writeFileSync(path.join(dataDir, 'fhir-facade.sqlite'), 'not a database at all. '.repeat(512));

    await expectFailedStart({ DATA_DIR: dataDir }, 'file is not a database');
  }, 60_000);

  it('stops the workers it told to open the database when the embedded server cannot listen', async () => {
    // the embedded server starts after the workers were told to open the database: its port is taken
    const taken = http.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = String((taken.address() as { port: number }).port);

      await expectFailedStart({ DATA_DIR: tempDir(), FHIR_EMBEDDED_PORT: port }, 'EADDRINUSE');
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  }, 60_000);

  it.skipIf(!TEST_DATABASE_URL)(
    'fails within DATABASE_QUERY_TIMEOUT_MS when PostgreSQL stops answering during the migrations',
    async () => {
      const schema = await createTestSchema();
      const proxy = await startPostgresProxy(schema.url);
      // connected, then silent at the migrator's first statement: only the statement timeout can end the wait
      proxy.hangAt('kysely_migration');
      try {
        await expectFailedStart(
          { DATA_DIR: tempDir(), DATABASE_URL: proxy.via(schema.url), DATABASE_QUERY_TIMEOUT_MS: '3000' },
          'the database did not answer within 3000 ms',
        );
      } finally {
        await proxy.close();
      }
    },
    60_000,
  );
});

/**
 * `npm start` with WORKERS=2 and `env`, expected to fail: a non-zero exit within 30 s that names
 * `reason`, and no process of its group left (no worker outlives its primary).
 */
async function expectFailedStart(env: Record<string, string>, reason: string): Promise<void> {
  const proc = runNpm(['start'], { WORKERS: '2', HOST: '127.0.0.1', PORT: String(await freePort()), ...env });
  try {
    const code = await Promise.race([
      proc.exited,
      new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 30_000)),
    ]);

    expect(code).not.toBe(0);
    expect(code).not.toBe('hung');
    expect(proc.output()).toContain('fhir-facade failed to start');
    expect(proc.output()).toContain(reason);
    await waitFor('every process of the group gone', async () => !groupHasProcesses(proc), 10_000, proc);
  } finally {
    await proc.kill('SIGKILL');
    if (env.DATA_DIR) fs.rmSync(env.DATA_DIR, { recursive: true, force: true });
  }
}

/** Whether any process is left in the process group `npm start` leads (its workers would be). */
function groupHasProcesses(proc: RunningProcess): boolean {
  try {
    return execFileSync('pgrep', ['-g', String(proc.child.pid)], { encoding: 'utf8' }).trim() !== '';
  } catch {
    return false;
  }
}
