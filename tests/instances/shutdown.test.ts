import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';
import { startHoldingProxy } from '../helpers/fakeUpstream.js';
import { isAlive, nodeProcessesUnder, startGatewayProcess, waitFor } from '../helpers/processes.js';
import { tempDir } from '../helpers/tempDir.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/**
 * A graceful stop keeps what the batched audit trail holds: refusals and access events wait in a
 * buffer for about a second (src/audit/auditTrail.ts), and the shutdown writes them. A stop often
 * signals every process at once (Ctrl-C in a terminal, systemd's stop of the control group,
 * `kill -- -<pgid>`), and a cluster's primary then signals its workers once more: that second
 * signal must not end the shutdown the first one began.
 */

const REFUSALS = 12;

describe.each(['1', '2'])('WORKERS=%s stopped by a signal to every process, then another', (workers) => {
  it('writes every buffered refusal before it exits', async () => {
    const dataDir = tempDir();
    const { proc, url } = await startGatewayProcess({
      WORKERS: workers,
      DATA_DIR: dataDir,
      ADMIN_EMAIL: 'admin@example.com',
      ADMIN_PASSWORD: 'correct horse battery staple',
    });
    const nodes = nodeProcessesUnder(proc.child.pid as number);
    try {
      // no token: each is refused and recorded in its serving process's buffer, not yet written
      const statuses = await Promise.all(
        Array.from({ length: REFUSALS }, () =>
          fetch(`${url}/fhir/Observation`, { headers: { connection: 'close' } }).then(async (r) => {
            await r.arrayBuffer();
            return r.status;
          }),
        ),
      );
      expect(new Set(statuses)).toEqual(new Set([401]));
      const stopped = proc.kill('SIGTERM');
      await new Promise((resolve) => setTimeout(resolve, 20));
      for (const pid of nodes) if (isAlive(pid)) process.kill(pid, 'SIGTERM');
      await stopped;
      await waitFor('every gateway process to exit', async () => nodes.every((pid) => !isAlive(pid)), 30_000);
    } finally {
      await proc.kill('SIGKILL');
    }
    const db = new Database(path.join(dataDir, 'fhir-facade.sqlite'), { readonly: true });
    try {
      const refused = db
        .prepare("select count(*) as n from audit_log where action = 'access.denied' and outcome = 'denied'")
        .get() as { n: number };
      expect(refused.n).toBe(REFUSALS);
    } finally {
      db.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe('a request still waiting on the FHIR server at the shutdown deadline', () => {
  it('is ended and audited as the stop (not_ready), not as the FHIR server failing, and nothing logs an error', async () => {
    const engine = await startEmbeddedFhirServer({ dataDir: tempDir() });
    cleanups.push(() => engine.close());
    // the FHIR server answers the search, but the answer never reaches the gateway
    const proxy = await startHoldingProxy(
      engine.baseUrl,
      (method, url) => method === 'GET' && url.includes('/Patient?'),
    );
    cleanups.push(() => proxy.close());
    const dataDir = tempDir();
    const { proc, url } = await startGatewayProcess({
      WORKERS: '1',
      DATA_DIR: dataDir,
      FHIR_BASE_URL: `${proxy.url}${new URL(engine.baseUrl).pathname}`,
      FHIR_TIMEOUT_MS: '60000',
      SHUTDOWN_TIMEOUT_MS: '300',
      ADMIN_EMAIL: 'admin@example.com',
      ADMIN_PASSWORD: 'correct horse battery staple',
    });
    cleanups.push(() => proc.kill('SIGKILL'));
    const login = await fetch(`${url}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'admin@example.com', password: 'correct horse battery staple' }),
    });
    const { token } = (await login.json()) as { token: string };
    const cut = fetch(`${url}/fhir/Patient?family=Held`, {
      headers: { authorization: `Bearer ${token}` },
    }).catch((error: unknown) => error);
    await proxy.answered;
    const nodes = nodeProcessesUnder(proc.child.pid as number);
    await proc.kill('SIGTERM');
    // npm may exit first: the gateway's own process is the one to wait for
    await waitFor('the gateway process to exit', async () => nodes.every((pid) => !isAlive(pid)), 30_000);
    expect(await cut).toBeInstanceOf(Error); // its connection was cut at the deadline
    const lines = proc
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: number; msg: string });
    expect(lines.filter((l) => l.level >= 50)).toEqual([]);
    expect(proc.output()).not.toMatch(/destroyed|ClientDestroyedError/);
    const db = new Database(path.join(dataDir, 'fhir-facade.sqlite'), { readonly: true });
    try {
      const rows = db
        .prepare(
          "select outcome, error_code from audit_log where action = 'fhir.search' and target_fhir_type = 'Patient'",
        )
        .all();
      expect(rows).toEqual([{ outcome: 'failed', error_code: 'not_ready' }]);
    } finally {
      db.close();
    }
  }, 60_000);
});
