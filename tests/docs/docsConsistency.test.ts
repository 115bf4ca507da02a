import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ARGON2_PARAMETERS } from '../../src/auth/passwords.js';
import { CONFIG_VARIABLES } from '../../src/config.js';
import { ERROR_CATALOG } from '../../src/errors.js';

/** The documents that must agree with the code: configuration, error catalog, file paths, links. */

const read = (file: string) => fs.readFileSync(file, 'utf8');
const DOCS = fs
  .readdirSync('docs')
  .filter((f) => f.endsWith('.md'))
  .map((f) => path.join('docs', f));

describe('configuration variables', () => {
  const configVariables = new Set(CONFIG_VARIABLES);

  it('lists every variable src/config.ts reads in .env.example, and nothing else', () => {
    const inExample = [...read('.env.example').matchAll(/^#?\s*([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!);
    expect(new Set(inExample).size, 'a variable appears twice in .env.example').toBe(inExample.length);
    expect(
      inExample.filter((v) => !configVariables.has(v)),
      'in .env.example, not read by config.ts',
    ).toEqual([]);
    expect(
      CONFIG_VARIABLES.filter((v) => !inExample.includes(v)),
      'read by config.ts, missing in .env.example',
    ).toEqual([]);
  });

  it('lists every variable in the table of docs/operations.md, and nothing else', () => {
    const table = [...read('docs/operations.md').matchAll(/^\| `([A-Z][A-Z0-9_]*)` \|/gm)].map((m) => m[1]!);
    expect(new Set(table).size, 'a variable appears twice in the table').toBe(table.length);
    expect(
      table.filter((v) => !configVariables.has(v)),
      'in the table, not read by config.ts',
    ).toEqual([]);
    expect(
      CONFIG_VARIABLES.filter((v) => !table.includes(v)),
      'read by config.ts, missing in the table',
    ).toEqual([]);
  });

  it('mentions in the docs only variables that exist', () => {
    // besides the gateway's: the tests' own, and FHIR_EMBEDDED_HOST of `npm run fhir` (src/fhir/embedded/standalone.ts)
    const known = new Set([
      ...CONFIG_VARIABLES,
      'TEST_DATABASE_URL',
      'TEST_LOG_LEVEL',
      'CHROMIUM_PATH',
      'FHIR_EMBEDDED_HOST',
    ]);
    // a backticked ALL_CAPS name of one of our variable families, optionally with `=value`
    const family =
      /^(FHIR|SMTP|JWT|APP|ADMIN|ACCESS|RESET|REFRESH|SESSION|CORS|TRUST|SHUTDOWN|PASSWORD|PUBLIC|DATA|DATABASE|MAIL|LOG|SIGNUP|HOST|PORT)(_|$)/;
    const unknown = DOCS.flatMap((file) =>
      [...read(file).matchAll(/`([A-Z][A-Z0-9_]*)(=[^`]*)?`/g)]
        .map((m) => m[1]!)
        .filter((name) => family.test(name) && !known.has(name))
        .map((name) => `${file}: ${name}`),
    );
    expect(unknown).toEqual([]);
  });
});

describe('docs/auth_integration.md error catalog', () => {
  const guide = read('docs/auth_integration.md');
  const catalog = guide.slice(guide.indexOf('### The catalog'));
  const rows = [...catalog.matchAll(/^\| (\d{3}) \| `([a-z_]+)` \| `([a-z-]+)` \|/gm)].map((m) => ({
    status: Number(m[1]),
    code: m[2]!,
    fhirCode: m[3]!,
  }));

  it('has one row per code of src/errors.ts, with its status and FHIR issue type', () => {
    const expected = Object.entries(ERROR_CATALOG).map(([code, e]) => ({
      status: e.status,
      code,
      fhirCode: e.fhirCode,
    }));
    const byCode = (a: { code: string }, b: { code: string }) => a.code.localeCompare(b.code);
    expect([...rows].sort(byCode)).toEqual([...expected].sort(byCode));
  });

  it('uses only catalog codes wherever the guide names an error code', () => {
    const named = [
      ...guide.matchAll(/\| \d{3} \| `([a-z_]+)`/g),
      ...guide.matchAll(/`\d{3} ([a-z_]+)`/g),
    ].map((m) => m[1]!);
    expect(named.length).toBeGreaterThan(20);
    expect(named.filter((code) => !(code in ERROR_CATALOG))).toEqual([]);
  });
});

describe('docs/security.md', () => {
  it('states the argon2id parameters that src/auth/passwords.ts uses, with a measured time', () => {
    const security = read('docs/security.md');
    expect(security).toContain(
      `m = ${ARGON2_PARAMETERS.memoryCost} KiB, t = ${ARGON2_PARAMETERS.timeCost}, p = ${ARGON2_PARAMETERS.parallelism}`,
    );
    expect(security).toMatch(/bench\/argon2\.ts/);
    expect(security).toMatch(/hash ≈ \d+(\.\d+)? ms/);
  });
});

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');
}

describe('docs/*.md', () => {
  it('links only to headings that exist', () => {
    const broken: string[] = [];
    for (const file of DOCS) {
      const text = read(file).replace(/^```[\s\S]*?^```/gm, '');
      const anchors = new Set([...text.matchAll(/^#{1,6} (.+)$/gm)].map((m) => slug(m[1]!)));
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const [file2, anchor] = target!.split('#') as [string, string | undefined];
        if (/^[a-z]+:/.test(file2)) continue;
        if (file2 === '' && anchor && !anchors.has(anchor)) broken.push(`${file}: #${anchor}`);
        if (file2 !== '' && !fs.existsSync(path.join('docs', file2))) broken.push(`${file}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('names only files and folders that exist', () => {
    const missing: string[] = [];
    for (const file of DOCS) {
      for (const [, ref] of read(file).matchAll(
        /`((?:src|db|tests|scripts|bench|docs|fhir-profiles)\/[A-Za-z0-9_./-]*)`/g,
      )) {
        if (!fs.existsSync(ref!)) missing.push(`${file}: ${ref}`);
      }
    }
    expect(missing).toEqual([]);
  });
});
