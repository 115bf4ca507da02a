import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startTestGateway, type TestGateway } from '../helpers/gateway.js';

/**
 * The README's quickstart shell lines, run as written (with bash, curl and node) against a real
 * gateway: only the address `http://127.0.0.1:3000` is replaced by the test gateway's.
 */

const README_ADDRESS = 'http://127.0.0.1:3000';
const run = promisify(execFile);

/** The ```sh blocks of the README, in order. */
function shellBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1] ?? '');
}

describe('README quickstart', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(() => gw.close());

  it('sets TOKEN from the login answer without jq and calls /auth/me with it', async () => {
    const readme = fs.readFileSync('README.md', 'utf8');
    const block = shellBlocks(readme).find((b) => b.includes('TOKEN=$('));
    expect(block, 'a README block that sets TOKEN').toBeDefined();
    expect(block).not.toMatch(/\bjq\b/);
    // the README's admin is the one the test gateway creates
    expect(block).toContain(ADMIN_EMAIL);
    expect(block).toContain(ADMIN_PASSWORD);
    const script = `set -euo pipefail\n${block!.replaceAll(README_ADDRESS, gw.url)}`;
    const { stdout } = await run('bash', ['-c', script], { timeout: 20_000 });
    const me = JSON.parse(stdout) as { user: { email: string; role: string } };
    expect(me.user).toMatchObject({ email: ADMIN_EMAIL, role: 'admin' });
  });
});
