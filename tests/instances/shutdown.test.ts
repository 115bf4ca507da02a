import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { isAlive, nodeProcessesUnder, startGatewayProcess, waitFor } from '../helpers/processes.js';
import { tempDir } from '../helpers/tempDir.js';

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
