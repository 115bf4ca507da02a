import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { startGateway } from '../../src/server.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startTestGateway } from '../helpers/gateway.js';
import { tempDir } from '../helpers/tempDir.js';

/**
 * `npm run admin:create -- --email ...` in a real child process, its password piped on
 * standard input as the README shows (`echo '<password>' | npm run admin:create -- ...`).
 */

const ROOT = path.resolve(import.meta.dirname, '../..');
const PASSWORD = 'a piped admin passphrase, long enough';

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function adminCreate(dataDir: string, email: string, stdin: string): Promise<Run> {
  // the parent's DATABASE_URL (a PostgreSQL run) must not redirect the script away from dataDir
  const { DATABASE_URL: _ignored, ...env } = process.env;
  const child = spawn('npm', ['run', '-s', 'admin:create', '--', '--email', email], {
    cwd: ROOT,
    env: { ...env, DATA_DIR: dataDir },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  child.stdin.end(stdin);
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

describe('npm run admin:create with the password on standard input', () => {
  it('creates an admin from a piped line, who can then log in', async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const run = await adminCreate(dataDir, 'admin2@example.com', `${PASSWORD}\n`);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Admin admin2@example.com created.');

    const gw = await startTestGateway({ dataDir });
    try {
      const response = await gw.call('/auth/login', {
        method: 'POST',
        json: { email: 'admin2@example.com', password: PASSWORD },
      });
      expect(response.status).toBe(200);
      const body = (await response.json()) as { user: { role: string } };
      expect(body.user.role).toBe('admin');
    } finally {
      await gw.close();
    }
  }, 60_000);

  it('accepts a last line without a newline (printf)', async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const run = await adminCreate(dataDir, 'admin3@example.com', PASSWORD);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Admin admin3@example.com created.');
  }, 60_000);

  it('exits 1 with one clear line when standard input is empty', async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const run = await adminCreate(dataDir, 'admin4@example.com', '');
    expect(run.code).toBe(1);
    expect(run.stderr.trim()).toBe('No password given on standard input.');
  }, 60_000);

  it.each(['not-an-email', 'a@b.com, c@d.com', 'Admin <a@b.com>'])(
    'exits 1 with one clear line on an email that is not one plain address (%s), creating nothing',
    async (email) => {
      const dataDir = tempDir();
      dirs.push(dataDir);
      const run = await adminCreate(dataDir, email, `${PASSWORD}\n`);
      expect(run.code).toBe(1);
      expect(run.stderr.trim()).toBe('The admin email must be a single email address.');
      expect(fs.existsSync(path.join(dataDir, 'fhir-facade.sqlite'))).toBe(false);
    },
    60_000,
  );
});

describe('ADMIN_EMAIL and ADMIN_PASSWORD on a later start', () => {
  it('leave the existing account as it is, and the start warns that ADMIN_PASSWORD was not applied', async () => {
    const dataDir = tempDir();
    const first = await startTestGateway({ dataDir });
    await first.close();
    const lines: string[] = [];
    const destination = { write: (line: string) => lines.push(line) };
    const config = loadConfig({
      PORT: '0',
      DATA_DIR: dataDir,
      ADMIN_EMAIL,
      ADMIN_PASSWORD: 'another admin passphrase entirely',
      PUBLIC_BASE_URL: 'http://gateway.test',
    });
    const again = await startGateway(config, { logger: createLogger('info', destination) });
    try {
      const warning = lines
        .map((l) => JSON.parse(l) as { level: number; msg: string })
        .find((l) => l.level === 40);
      expect(warning?.msg).toMatch(/ADMIN_PASSWORD is not applied/);
      expect(lines.join('\n')).not.toContain('another admin passphrase');
      const login = (password: string) =>
        fetch(`${again.url}/auth/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ email: ADMIN_EMAIL, password }),
        });
      expect((await login(ADMIN_PASSWORD)).status).toBe(200);
      expect((await login('another admin passphrase entirely')).status).toBe(401);
    } finally {
      await again.close();
    }
  });
});
