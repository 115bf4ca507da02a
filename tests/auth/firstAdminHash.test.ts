import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { createPasswordHasher, hashBeforeServing } from '../../src/auth/passwords.js';
import { type RunningProcess, startGatewayProcess, waitFor } from '../helpers/processes.js';
import { tempDir } from '../helpers/tempDir.js';

/**
 * The first admin (ADMIN_EMAIL/ADMIN_PASSWORD) is hashed on the starting process's own thread
 * (hashBeforeServing), not on a hashing thread started for it: the hash must be the one the
 * threads check at login, with the same parameters and the same normalisation.
 */

const PASSWORD = 'correct horse battery staple';
// the same passphrase in full-width letters: NFKC makes it the one above
const FULL_WIDTH = 'ｃｏｒｒｅｃｔ ｈｏｒｓｅ ｂａｔｔｅｒｙ ｓｔａｐｌｅ';

describe('hashBeforeServing', () => {
  it("hashes with argon2id at OWASP's parameters, and the hashing threads verify it", async () => {
    const hash = await hashBeforeServing(FULL_WIDTH);
    expect(hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    const hasher = await createPasswordHasher();
    try {
      expect(await hasher.verify(hash, PASSWORD)).toBe(true);
      expect(await hasher.verify(hash, FULL_WIDTH)).toBe(true);
      expect(await hasher.verify(hash, `${PASSWORD}!`)).toBe(false);
    } finally {
      await hasher.close();
    }
  });
});

describe('a first start with ADMIN_EMAIL and ADMIN_PASSWORD', () => {
  let proc: RunningProcess | undefined;
  const dataDir = tempDir();

  afterAll(async () => {
    await proc?.kill('SIGTERM');
    fs.rmSync(dataDir, { recursive: true, force: true });
  }, 30_000);

  it('creates the admin without starting a hashing thread; the first login starts one, and signs the admin in', async () => {
    const started = await startGatewayProcess({
      WORKERS: '1',
      DATA_DIR: dataDir,
      ADMIN_EMAIL: 'admin@example.com',
      ADMIN_PASSWORD: PASSWORD,
    });
    proc = started.proc;
    expect(proc.output()).toContain('first admin account (ADMIN_EMAIL)');
    expect(proc.output()).not.toContain('password hashing thread started');
    const login = await fetch(`${started.url}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'admin@example.com', password: FULL_WIDTH }),
    });
    expect(login.status).toBe(200);
    expect(((await login.json()) as { token?: unknown }).token).toEqual(expect.any(String));
    await waitFor('the hashing thread log line', async () =>
      proc?.output().includes('password hashing thread started'),
    );
  }, 90_000);
});
