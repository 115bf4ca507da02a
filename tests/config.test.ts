import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { DEFAULT_DIRECTORY_TYPES } from '../src/fhir/directoryTypes.js';
import { tempDir } from './helpers/gateway.js';

function errorFor(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('config', () => {
  it('starts from defaults: embedded FHIR, SQLite in ./data, loopback on 3000', () => {
    const config = loadConfig({});
    expect(config.port).toBe(3000);
    expect(config.host).toBe('127.0.0.1');
    expect(config.fhir.baseUrl).toBeUndefined();
    expect(config.databaseUrl).toBeUndefined();
    expect(config.dataDir).toMatch(/data$/);
    expect(config.fhir.timeoutMs).toBe(10_000);
    expect(config.fhir.maxConnections).toBe(32);
    expect(config.fhir.auth).toEqual({ kind: 'none' });
    expect(config.jwt.accessTokenTtlSeconds).toBe(900);
    expect(config.publicBaseUrl).toBe('http://localhost:3000');
    expect(config.jwt.issuer).toBe('http://localhost:3000');
    expect(config.firstAdmin).toBeUndefined();
    expect(config.corsOrigins).toEqual([]);
    expect(config.trustProxy).toBe(false);
    expect(config.passwordHashPriority).toBe('idle');
    // one serving process per core, one idle hashing thread each
    expect(config.passwordHashThreads).toBe(1);
    expect(Object.isFrozen(config) && Object.isFrozen(config.jwt)).toBe(true);
  });

  it.each([
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ PUBLIC_BASE_URL: 'ftp://x' }, 'PUBLIC_BASE_URL'],
    [{ PORT: '0' }, 'PUBLIC_BASE_URL'],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL'],
    [{ FHIR_BASE_URL: 'not a url' }, 'FHIR_BASE_URL'],
    [{ FHIR_BASE_URL: 'http://user:pw@fhir.example' }, 'FHIR_BASE_URL'],
    [{ FHIR_AUTH: 'basic' }, 'FHIR_AUTH'],
    [{ FHIR_AUTH: 'bearer' }, 'FHIR_TOKEN'],
    [{ FHIR_AUTH: 'client_credentials' }, 'FHIR_TOKEN_URL'],
    [{ FHIR_AUTH: 'client_credentials', FHIR_TOKEN_URL: 'https://auth.example/token' }, 'FHIR_CLIENT_ID'],
    [
      { FHIR_AUTH: 'client_credentials', FHIR_TOKEN_URL: 'https://auth.example/token', FHIR_CLIENT_ID: 'gw' },
      'FHIR_CLIENT_SECRET',
    ],
    [{ FHIR_TIMEOUT_MS: '5' }, 'FHIR_TIMEOUT_MS'],
    [{ FHIR_MAX_CONNECTIONS: '0' }, 'FHIR_MAX_CONNECTIONS'],
    [{ FHIR_MAX_CONNECTIONS: '5000' }, 'FHIR_MAX_CONNECTIONS'],
    [{ SMTP_URL: 'http://mail' }, 'SMTP_URL'],
    [{ SMTP_URL: 'smtp://' }, 'SMTP_URL'],
    [{ SMTP_URL: 'smtp://mail.example:notaport' }, 'SMTP_URL'],
    [{ MAIL_FROM: 'a@b\r\nBcc: x@y' }, 'MAIL_FROM'],
    [{ ADMIN_EMAIL: 'not-an-email', ADMIN_PASSWORD: 'x' }, 'ADMIN_EMAIL'],
    [{ ADMIN_EMAIL: 'admin@example.com' }, 'ADMIN_PASSWORD'],
    [{ ADMIN_PASSWORD: 'something long enough' }, 'ADMIN_EMAIL'],
    [{ ACCESS_TOKEN_TTL: '10y' }, 'ACCESS_TOKEN_TTL'],
    [{ ACCESS_TOKEN_TTL: '5' }, 'ACCESS_TOKEN_TTL'],
    [{ CORS_ORIGINS: '*' }, 'CORS_ORIGINS'],
    [{ CORS_ORIGINS: 'https://app.example.com/path' }, 'CORS_ORIGINS'],
    [{ TRUST_PROXY: 'maybe' }, 'TRUST_PROXY'],
    [{ PASSWORD_MIN_LENGTH: '4' }, 'PASSWORD_MIN_LENGTH'],
    [{ PASSWORD_HASH_PRIORITY: 'low' }, 'PASSWORD_HASH_PRIORITY'],
    [{ PASSWORD_HASH_THREADS: '0' }, 'PASSWORD_HASH_THREADS'],
    [{ PASSWORD_HASH_THREADS: 'two' }, 'PASSWORD_HASH_THREADS'],
    [{ PASSWORD_HASH_PRIORITY: 'normal', PASSWORD_HASH_THREADS: '2' }, 'PASSWORD_HASH_THREADS'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ FHIR_DIRECTORY_TYPES: 'Organization,Observation' }, 'FHIR_DIRECTORY_TYPES'],
    [{ FHIR_DIRECTORY_TYPES: 'Device' }, 'FHIR_DIRECTORY_TYPES'],
    [{ FHIR_DIRECTORY_TYPES: 'organization' }, 'FHIR_DIRECTORY_TYPES'],
    [{ PUBLIC_BASE_URL: 'https://gw.example', JWT_ISSUER: 'https://gw.example/oauth' }, 'JWT_ISSUER'],
    [{ PUBLIC_BASE_URL: 'https://gw.example', JWT_ISSUER: 'https://gw.example/oauth/' }, 'JWT_ISSUER'],
  ])('names the variable in one line for %o', (env, variable) => {
    const message = errorFor(env);
    expect(message.startsWith(`Invalid configuration: ${variable} `)).toBe(true);
    expect(message).not.toContain('\n');
  });

  it('accepts durations, booleans and origin lists in their documented forms', () => {
    const config = loadConfig({
      ACCESS_TOKEN_TTL: '15m',
      TRUST_PROXY: 'true',
      CORS_ORIGINS: 'https://app.example.com, http://localhost:5173',
      FHIR_BASE_URL: 'https://fhir.example.com/r4/',
      PASSWORD_HASH_PRIORITY: 'normal',
    });
    expect(config.passwordHashPriority).toBe('normal');
    expect(config.passwordHashThreads).toBe(1);
    expect(config.jwt.accessTokenTtlSeconds).toBe(900);
    expect(config.trustProxy).toBe(true);
    expect(config.corsOrigins).toEqual(['https://app.example.com', 'http://localhost:5173']);
    expect(config.fhir.baseUrl).toBe('https://fhir.example.com/r4');
  });

  it.each([
    [undefined, DEFAULT_DIRECTORY_TYPES],
    ['', DEFAULT_DIRECTORY_TYPES],
    [' Organization, Questionnaire,Organization ', ['Organization', 'Questionnaire']],
    ['none', []],
  ])('reads FHIR_DIRECTORY_TYPES=%j as the directory %j', (value, types) => {
    const config = loadConfig(value === undefined ? {} : { FHIR_DIRECTORY_TYPES: value });
    expect([...config.fhir.directoryTypes]).toEqual(types);
  });

  it('names the type that would show patient data to every role', () => {
    expect(errorFor({ FHIR_DIRECTORY_TYPES: 'Organization, Observation' })).toBe(
      'Invalid configuration: FHIR_DIRECTORY_TYPES must list R4 types every role may read, or none: Observation is patient data (in the R4 Patient compartment)',
    );
  });

  it.each([
    [{ WORKERS: '1' }, os.availableParallelism()],
    [{ WORKERS: String(os.availableParallelism() * 2) }, 1],
    [{ WORKERS: '1', PASSWORD_HASH_THREADS: '3' }, 3],
    [{ PASSWORD_HASH_PRIORITY: 'normal', PASSWORD_HASH_THREADS: '1' }, 1],
  ])('shares the cores out as idle hashing threads among the serving processes: %o', (env, threads) => {
    expect(loadConfig(env).passwordHashThreads).toBe(threads);
  });

  it('stops `npm start` with exit 1 and one clear line on a bad variable', () => {
    const result = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      env: { ...process.env, PORT: 'not-a-port', DATA_DIR: '/nonexistent-never-created' },
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(result.status).toBe(1);
    expect(result.stderr.trim()).toBe('Invalid configuration: PORT must be an integer between 0 and 65535');
  });

  // checked when the key is read at start (in the cluster's primary too), not by loadConfig
  it.each([
    ['a PEM that is not one', 'not-a-pem'],
    ['a JWK without its public x', '{"kty":"EC","crv":"P-256","d":"AAAA"}'],
    [
      'an RSA key',
      generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }),
    ],
  ])('stops `npm start` with one line naming JWT_PRIVATE_KEY on %s, the key not echoed', (_what, key) => {
    const result = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      env: {
        ...process.env,
        JWT_PRIVATE_KEY: String(key),
        DATA_DIR: tempDir(),
        PORT: '0',
        PUBLIC_BASE_URL: 'http://gateway.test',
        LOG_LEVEL: 'silent',
      },
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(result.status).toBe(1);
    expect(result.stderr.trim()).toBe(
      'fhir-facade failed to start: Invalid configuration: JWT_PRIVATE_KEY must be an EC P-256 private key (ES256): a PKCS#8 or SEC1 PEM, or a private JWK',
    );
  });
});
