import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const LAZY = ['pg', 'prom-client', 'nodemailer'];

/**
 * Runs `script` (an ES module, tsx loaded) in a fresh process and answers which of LAZY it had
 * loaded by the end, as ES modules or as CommonJS: the test process itself has loaded them all.
 */
async function packagesLoadedBy(script: string): Promise<string[]> {
  const report = `
    const loaded = await globalThis.loadedFiles();
    process.stdout.write(JSON.stringify(${JSON.stringify(LAZY)}.filter((name) =>
      loaded.some((file) => file.includes(\`/node_modules/\${name}/\`)))));`;
  const { stdout } = await run(
    process.execPath,
    [
      '--import',
      'tsx',
      '--import',
      './tests/helpers/loadedFiles.mjs',
      '--input-type=module',
      '-e',
      `${script}\n${report}`,
    ],
    { cwd: ROOT, timeout: 25_000 },
  );
  return JSON.parse(stdout) as string[];
}

describe('packages the embedded default loads only when it uses them', () => {
  it('the whole gateway is imported without the PostgreSQL driver, prom-client or nodemailer', async () => {
    expect(
      await packagesLoadedBy("await import('./src/server.ts'); await import('./src/cluster.ts');"),
    ).toEqual([]);
  }, 30_000);

  it('loads each with its first use: a PostgreSQL pool, metrics switched on, a first mail', async () => {
    const script = `
      import os from 'node:os';
      import fs from 'node:fs';
      import path from 'node:path';
      import pino from 'pino';
      const { openDatabase } = await import('./db/connection.ts');
      const { createMetrics } = await import('./src/metrics/metrics.ts');
      const { createMailer } = await import('./src/email/mailer.ts');
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-lazy-'));
      const logger = pino({ level: 'silent' });
      try {
        const sqlite = openDatabase({ databaseUrl: undefined, dataDir });
        createMetrics({ db: sqlite.db, clock: { now: () => new Date() }, logger }, { enabled: false });
        const mailer = createMailer({ smtpUrl: undefined, from: 'gateway@example.com', dataDir, logger });
        const before = await globalThis.loadedFiles();
        if (before.some((file) => /node_modules\\/(pg|prom-client|nodemailer)\\//.test(file))) throw new Error('loaded before use');
        const postgres = openDatabase({ databaseUrl: 'postgres://nobody@127.0.0.1:1/none', dataDir });
        createMetrics({ db: sqlite.db, clock: { now: () => new Date() }, logger }, { enabled: true });
        await mailer.send({ to: 'someone@example.com', subject: 'Hello', text: 'Hi', html: '<p>Hi</p>' });
        await postgres.close();
        await sqlite.close();
        mailer.close();
      } finally {
        fs.rmSync(dataDir, { recursive: true, force: true });
      }`;
    expect(await packagesLoadedBy(script)).toEqual(LAZY);
  }, 30_000);
});
