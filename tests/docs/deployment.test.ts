import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
// yaml comes with @hono/zod-openapi (openapi3-ts), a runtime dependency
import { parse } from 'yaml';
import { CONFIG_VARIABLES } from '../../src/config.js';

/**
 * What cannot run here is kept consistent instead: the supported Node versions (package.json
 * "engines", the Dockerfile's base image, the docs) and the docker-compose.yml example (no
 * Docker engine on these machines), read as data.
 */

const read = (file: string) => fs.readFileSync(file, 'utf8');

/** `^20.19.0 || ^22.12.0 || ^24.0.0` -> [[20, 19, 0], [22, 12, 0], [24, 0, 0]]; only caret ranges are expected. */
function caretRanges(range: string): number[][] {
  return range.split('||').map((part) => {
    const match = /^\s*\^(\d+)\.(\d+)\.(\d+)\s*$/.exec(part);
    if (!match) throw new Error(`not a caret range: ${part}`);
    return match.slice(1).map(Number);
  });
}

function satisfies(version: string, ranges: number[][]): boolean {
  const [major = 0, minor = 0, patch = 0] = version.replace(/^v/, '').split('.').map(Number);
  return ranges.some(([m = 0, n = 0, p = 0]) => major === m && (minor > n || (minor === n && patch >= p)));
}

describe('supported Node.js versions', () => {
  const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines.node;
  const ranges = caretRanges(engines);
  const majors = ranges.map(([major]) => major);

  it('are LTS lines, and include the Node the tests run on', () => {
    expect(majors.every((major) => major !== undefined && major % 2 === 0)).toBe(true);
    expect(satisfies(process.version, ranges), `${process.version} is not in "${engines}"`).toBe(true);
    expect(satisfies('20.18.9', ranges)).toBe(false);
    expect(satisfies('22.12.0', ranges)).toBe(true);
  });

  it('agree with the Dockerfile, whose stages all use the newest of them', () => {
    const images = [...read('Dockerfile').matchAll(/^FROM node:(\d+)[-.\w]*/gm)].map((m) => Number(m[1]));
    expect(images.length).toBeGreaterThan(0);
    expect(new Set(images)).toEqual(new Set([Math.max(...(majors as number[]))]));
  });

  it('are stated in docs/operations.md and the README', () => {
    expect(read('docs/operations.md')).toContain(`\`${engines}\``);
    // the quickstart's paragraph that starts with "Node.js" names every supported line
    const line = /^Node\.js [^\n]*(\n[^\n]+)*/m.exec(read('README.md'))?.[0] ?? '';
    for (const [major, minor] of ranges) expect(line).toMatch(new RegExp(`\\b${major}(\\.${minor})?\\b`));
  });
});

interface ComposeService {
  image?: string;
  build?: unknown;
  ports?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, unknown>;
  configs?: { source: string }[];
}

describe('docker-compose.yml', () => {
  const compose = parse(read('docker-compose.yml')) as {
    services: Record<string, ComposeService>;
    configs?: Record<string, unknown>;
    volumes?: Record<string, unknown>;
  };
  const { services } = compose;
  const gateway = services.gateway as ComposeService;

  it('builds the gateway from this repository and runs the official HAPI FHIR image the suite tests', () => {
    expect(gateway.build).toBe('.');
    expect(services.fhir?.image).toBe('hapiproject/hapi:v8.8.0');
    expect(services.db?.image).toMatch(/^postgres:15/);
  });

  it('points the gateway at its services and passes only variables config.ts reads', () => {
    const env = gateway.environment ?? {};
    expect(Object.keys(env).filter((name) => !CONFIG_VARIABLES.includes(name as never))).toEqual([]);
    expect(new URL(env.FHIR_BASE_URL ?? '').hostname).toBe('fhir');
    expect(env.DATABASE_URL).toMatch(/@db:5432\//);
    for (const [name, service] of Object.entries(services)) {
      for (const dependency of Object.keys(service.depends_on ?? {})) {
        expect(services, `${name} depends on ${dependency}`).toHaveProperty(dependency);
      }
      for (const config of service.configs ?? []) {
        expect(compose.configs, `${name} uses ${config.source}`).toHaveProperty(config.source);
      }
    }
  });

  it('publishes the gateway alone, on the host loopback: HAPI has no authentication of its own', () => {
    const published = Object.entries(services).filter(([, service]) => service.ports?.length);
    expect(published.map(([name]) => name)).toEqual(['gateway']);
    expect(gateway.ports?.every((port) => port.startsWith('127.0.0.1:'))).toBe(true);
  });

  it('sets no password: the required ones come from the environment', () => {
    const text = read('docker-compose.yml');
    expect(text).toContain('${ADMIN_PASSWORD:?');
    expect(text).toContain('${POSTGRES_PASSWORD:?');
    expect(read('docs/operations.md')).toMatch(/^## Docker Compose$/m);
  });
});
