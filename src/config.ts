import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import type { HashingPriority } from './auth/passwords.js';
import { PLAIN_ADDRESS } from './email/address.js';
import { DEFAULT_DIRECTORY_TYPES, directoryTypeRefusal } from './fhir/directoryTypes.js';

/**
 * The only reader of the environment. Every variable is validated once at start; a bad or
 * missing value stops the process with one line naming the variable (see ConfigError).
 * Every variable read here is listed in .env.example and docs/operations.md (a test checks).
 */

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    reason: string,
  ) {
    super(`Invalid configuration: ${variable} ${reason}`);
    this.name = 'ConfigError';
  }
}

/** Marks a master secret given as bytes (secrets.ts), as DATA_DIR/app-secret stores them. */
export const BASE64URL_PREFIX = 'base64url:';

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** Parses `900`, `900s`, `15m`, `1h`, `7d` into seconds. */
function parseDurationSeconds(value: string): number | undefined {
  const match = /^(\d+)\s*([smhd]?)$/.exec(value.trim());
  if (!match) return undefined;
  const unit = DURATION_UNITS[match[2] || 's'] ?? 1;
  return Number(match[1]) * unit;
}

const emptyToUndefined = (v: unknown) => (typeof v === 'string' && v.trim() === '' ? undefined : v);
const optionalString = z.preprocess(emptyToUndefined, z.string().optional());

const httpUrl = (message: string) =>
  z
    .string()
    .trim()
    .refine((v) => {
      try {
        const url = new URL(v);
        return (url.protocol === 'http:' || url.protocol === 'https:') && !url.username && !url.password;
      } catch {
        return false;
      }
    }, message)
    .transform((v) => v.replace(/\/+$/, ''));

/** smtp(s)://[user:pass@]host[:port][?options]: the form nodemailer reads; a host is required. */
const smtpUrl = z
  .string()
  .trim()
  .refine((v) => {
    try {
      const url = new URL(v);
      return (url.protocol === 'smtp:' || url.protocol === 'smtps:') && url.hostname !== '';
    } catch {
      return false;
    }
  }, 'must be an smtp:// or smtps:// URL with a host (smtp://user:pass@host:port)');

const duration = (min: number, max: number) =>
  z.string().transform((v, ctx) => {
    const seconds = parseDurationSeconds(v);
    if (seconds === undefined || seconds < min || seconds > max) {
      ctx.addIssue({
        code: 'custom',
        message: `must be a duration between ${min}s and ${max}s (e.g. 900, 15m, 1h)`,
      });
      return z.NEVER;
    }
    return seconds;
  });

const integer = (min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, `must be an integer between ${min} and ${max}`)
    .transform(Number)
    .refine((n) => n >= min && n <= max, `must be an integer between ${min} and ${max}`);

const booleanFlag = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ['true', 'false', '1', '0', 'yes', 'no'].includes(v), 'must be true or false')
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

/** A master secret: 32+ characters of text, or `base64url:` and 32+ random bytes (the form of DATA_DIR/app-secret). */
const masterSecret = z
  .string()
  .min(32, 'must be at least 32 characters of random text')
  .refine(
    (v) =>
      !v.startsWith(BASE64URL_PREFIX) ||
      Buffer.from(v.slice(BASE64URL_PREFIX.length), 'base64url').length >= 32,
    'must be base64url: followed by at least 32 bytes in base64url',
  );

// the address rule every other part of the gateway uses, so the first admin can always log in
const emailAddress = z.string().trim().toLowerCase().regex(PLAIN_ADDRESS, 'must be an email address');

/** The environment schema: one entry per variable, with its default. */
const envSchema = z.object({
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  PORT: integer(0, 65535).default(3000),
  HOST: z.string().trim().min(1).default('127.0.0.1'),
  PUBLIC_BASE_URL: z.preprocess(
    emptyToUndefined,
    httpUrl('must be an http(s) URL without credentials').optional(),
  ),
  DATA_DIR: z.string().trim().min(1).default('./data'),
  DATABASE_URL: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .trim()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL (leave it unset for the embedded SQLite file)')
      .optional(),
  ),
  // above the 2 s lock wait, so a statement waiting for a lock ends as a lock timeout, not as a dropped connection
  DATABASE_QUERY_TIMEOUT_MS: integer(3_000, 3_600_000).default(15_000),
  FHIR_BASE_URL: z.preprocess(
    emptyToUndefined,
    httpUrl('must be an http(s) URL without credentials').optional(),
  ),
  FHIR_EMBEDDED_PORT: integer(0, 65535).default(0),
  FHIR_AUTH: z.enum(['none', 'bearer', 'client_credentials']).default('none'),
  FHIR_TOKEN: optionalString,
  FHIR_TOKEN_URL: z.preprocess(emptyToUndefined, httpUrl('must be an http(s) URL').optional()),
  FHIR_CLIENT_ID: optionalString,
  FHIR_CLIENT_SECRET: optionalString,
  FHIR_SCOPE: optionalString,
  FHIR_TIMEOUT_MS: integer(100, 300_000).default(10_000),
  FHIR_MAX_CONNECTIONS: integer(1, 1024).default(32),
  PANEL_CACHE_TTL: duration(0, 300).default(30),
  FHIR_DIRECTORY_TYPES: optionalString,
  SMTP_URL: z.preprocess(emptyToUndefined, smtpUrl.optional()),
  MAIL_FROM: z
    .string()
    .trim()
    .regex(/^[^\r\n]+$/, 'must be one line (an address, optionally with a display name)')
    .default('no-reply@localhost'),
  APP_NAME: z
    .string()
    .trim()
    .min(1)
    .max(100)
    .regex(/^[^\r\n<>]+$/, 'must be one line without < or >')
    .default('fhir-facade'),
  SIGNUP_URL: z.preprocess(emptyToUndefined, httpUrl('must be an http(s) URL').optional()),
  ADMIN_EMAIL: z.preprocess(emptyToUndefined, emailAddress.optional()),
  ADMIN_PASSWORD: optionalString,
  PASSWORD_MIN_LENGTH: integer(8, 64).default(15),
  PASSWORD_HASH_PRIORITY: z.enum(['idle', 'normal']).default('idle'),
  PASSWORD_HASH_THREADS: z.preprocess(emptyToUndefined, integer(1, 64).optional()),
  ACCESS_CODE_TTL: duration(300, 86_400).default(86_400),
  ADMIN_CODE_IN_RESPONSE: booleanFlag.default(false),
  JWT_PRIVATE_KEY: optionalString,
  JWT_PREVIOUS_KEYS: optionalString,
  APP_SECRET: z.preprocess(emptyToUndefined, masterSecret.optional()),
  APP_SECRET_PREVIOUS: z.preprocess(emptyToUndefined, masterSecret.optional()),
  JWT_ISSUER: optionalString,
  JWT_AUDIENCE: z.string().trim().min(1).default('fhir-facade'),
  ACCESS_TOKEN_TTL: duration(60, 86_400).default(900),
  REFRESH_TOKEN_TTL: duration(300, 90 * 86_400).default(7 * 86_400),
  SESSION_MAX_AGE: duration(3600, 365 * 86_400).default(30 * 86_400),
  RESET_CODE_TTL: duration(300, 3600).default(1800),
  RESET_URL: z.preprocess(emptyToUndefined, httpUrl('must be an http(s) URL').optional()),
  CORS_ORIGINS: z.string().default(''),
  TRUST_PROXY: booleanFlag.default(false),
  SHUTDOWN_TIMEOUT_MS: integer(0, 120_000).default(10_000),
  WORKERS: z.preprocess(emptyToUndefined, integer(1, 64).optional()),
  WORKER_WATCHDOG_SECONDS: integer(0, 3600).default(30),
  METRICS_TOKEN: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .min(32, 'must be at least 32 characters of random text (e.g. openssl rand -hex 32)')
      .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces (it travels in a header)')
      .optional(),
  ),
});

type Env = z.infer<typeof envSchema>;

export interface Config {
  readonly logLevel: Env['LOG_LEVEL'];
  readonly port: number;
  readonly host: string;
  readonly publicBaseUrl: string;
  readonly dataDir: string;
  readonly databaseUrl: string | undefined;
  /** PostgreSQL: how long a statement may go unanswered before its connection is dropped (503). */
  readonly databaseQueryTimeoutMs: number;
  readonly fhir: {
    readonly baseUrl: string | undefined;
    readonly embeddedPort: number;
    readonly timeoutMs: number;
    /** Connections to the FHIR server per serving process (calls beyond them wait for one). */
    readonly maxConnections: number;
    /** How long a practitioner's panel membership answer is reused, seconds (0: asked every time). */
    readonly panelCacheTtlSeconds: number;
    /** The shared directory: types every signed-in role may read whole (src/fhir/directoryTypes.ts). */
    readonly directoryTypes: ReadonlySet<string>;
    readonly auth:
      | { readonly kind: 'none' }
      | { readonly kind: 'bearer'; readonly token: string }
      | {
          readonly kind: 'client_credentials';
          readonly tokenUrl: string;
          readonly clientId: string;
          readonly clientSecret: string;
          readonly scope: string | undefined;
        };
  };
  readonly mail: { readonly smtpUrl: string | undefined; readonly from: string };
  readonly appName: string;
  readonly signupUrl: string;
  readonly firstAdmin: { readonly email: string; readonly password: string } | undefined;
  readonly passwordMinLength: number;
  /** The hashing thread's CPU priority (src/auth/passwords.ts). */
  readonly passwordHashPriority: HashingPriority;
  /** How many idle-priority hashing threads each serving process has (`normal` has one). */
  readonly passwordHashThreads: number;
  /** Lifetime of a signup access code, seconds (NIST SP 800-63A: at most 24 h for a code sent by email). */
  readonly accessCodeTtlSeconds: number;
  /** Opt-in for deployments without mail: a re-issued code is returned once to the admin. */
  readonly adminCodeInResponse: boolean;
  /** Lifetime of an emailed password-reset code, seconds. */
  readonly resetCodeTtlSeconds: number;
  /** The frontend's reset page linked from reset mails. */
  readonly resetUrl: string;
  readonly appSecret: string | undefined;
  /** The master secret APP_SECRET replaced: what it made (codes, cursors, sealed mails) still verifies and opens. */
  readonly appSecretPrevious: string | undefined;
  readonly jwt: {
    readonly privateKey: string | undefined;
    /** Public keys that verify tokens but never sign (a rotation's previous keys), as given. */
    readonly previousKeys: string | undefined;
    readonly issuer: string;
    readonly audience: string;
    readonly accessTokenTtlSeconds: number;
    readonly refreshTokenTtlSeconds: number;
    readonly sessionMaxAgeSeconds: number;
  };
  readonly corsOrigins: readonly string[];
  readonly trustProxy: boolean;
  readonly shutdownTimeoutMs: number;
  /** Serving processes (src/cluster.ts); 1 runs everything in this process. */
  readonly workers: number;
  /** A worker whose event loop has not answered the primary for this long is killed and replaced; 0: never. */
  readonly workerWatchdogMs: number;
  /** GET /metrics is served only when set, to callers presenting it as a bearer token. */
  readonly metrics: { readonly token: string | undefined };
}

/** The variables this module reads, in the order of .env.example. */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(envSchema.shape);

function requireFor(env: Env, variable: keyof Env, when: string): string {
  const value = env[variable];
  if (typeof value !== 'string' || value === '') throw new ConfigError(variable, `is required when ${when}`);
  return value;
}

function fhirAuth(env: Env): Config['fhir']['auth'] {
  switch (env.FHIR_AUTH) {
    case 'none':
      return { kind: 'none' };
    case 'bearer':
      return { kind: 'bearer', token: requireFor(env, 'FHIR_TOKEN', 'FHIR_AUTH=bearer') };
    case 'client_credentials':
      return {
        kind: 'client_credentials',
        tokenUrl: requireFor(env, 'FHIR_TOKEN_URL', 'FHIR_AUTH=client_credentials'),
        clientId: requireFor(env, 'FHIR_CLIENT_ID', 'FHIR_AUTH=client_credentials'),
        clientSecret: requireFor(env, 'FHIR_CLIENT_SECRET', 'FHIR_AUTH=client_credentials'),
        scope: env.FHIR_SCOPE,
      };
  }
}

/**
 * PASSWORD_HASH_THREADS: with `idle`, the hashing threads of each serving process; by default the
 * cores divided by WORKERS (at least one), about one per core in all: a SCHED_IDLE thread
 * takes only the CPU time requests leave, so more of them only use more of what is spare.
 * `normal` hashes on one thread (more at normal priority would take the cores from requests).
 */
function passwordHashThreads(env: Env): number {
  if (env.PASSWORD_HASH_PRIORITY === 'normal') {
    if ((env.PASSWORD_HASH_THREADS ?? 1) !== 1)
      throw new ConfigError(
        'PASSWORD_HASH_THREADS',
        'must be unset or 1 with PASSWORD_HASH_PRIORITY=normal (it hashes on one thread)',
      );
    return 1;
  }
  const cores = os.availableParallelism();
  return env.PASSWORD_HASH_THREADS ?? Math.max(1, Math.floor(cores / (env.WORKERS ?? cores)));
}

function firstAdmin(env: Env): Config['firstAdmin'] {
  if (!env.ADMIN_EMAIL && !env.ADMIN_PASSWORD) return undefined;
  const email = requireFor(env, 'ADMIN_EMAIL', 'ADMIN_PASSWORD is set');
  const password = requireFor(env, 'ADMIN_PASSWORD', 'ADMIN_EMAIL is set');
  return { email, password };
}

/**
 * FHIR_DIRECTORY_TYPES: comma-separated R4 types, `none` for no directory, unset for the default.
 * A type that could show one patient's data to every role is refused by name.
 */
function directoryTypes(raw: string | undefined): ReadonlySet<string> {
  if (raw === undefined) return new Set(DEFAULT_DIRECTORY_TYPES);
  if (raw.trim() === 'none') return new Set();
  const types = raw
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  for (const type of types) {
    const refusal = directoryTypeRefusal(type);
    if (refusal)
      throw new ConfigError(
        'FHIR_DIRECTORY_TYPES',
        `must list R4 types every role may read, or none: ${type} ${refusal}`,
      );
  }
  return new Set(types);
}

function corsOrigins(raw: string): string[] {
  const origins = raw
    .split(',')
    .map((o) => o.trim())
    .filter(Boolean);
  for (const origin of origins) {
    // an allow-list of exact origins; a wildcard would let any site call the API with a stolen token
    if (origin === '*' || new URL(origin).origin !== origin.replace(/\/+$/, '')) {
      throw new ConfigError(
        'CORS_ORIGINS',
        'must be a comma-separated list of exact origins (https://app.example.com)',
      );
    }
  }
  return origins;
}

function firstIssue(error: z.ZodError): ConfigError {
  const issue = error.issues[0];
  const variable = String(issue?.path[0] ?? 'environment');
  const message = issue?.message ?? 'is invalid';
  return new ConfigError(
    variable,
    message.startsWith('must') || message.startsWith('is') ? message : `is invalid: ${message}`,
  );
}

/**
 * Loads `.env` from the working directory into the environment when it exists. Variables
 * already set win, so a deployment's real environment overrides the file.
 */
export function loadDotEnv(file = '.env'): void {
  if (fs.existsSync(file)) process.loadEnvFile(file);
}

/** Validates the environment and returns a frozen config. Throws ConfigError naming the first bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) throw firstIssue(parsed.error);
  const e = parsed.data;
  // with PORT=0 the port is only known once listening, and a default of localhost:0 would be written into every link and token
  if (e.PORT === 0 && e.PUBLIC_BASE_URL === undefined)
    throw new ConfigError(
      'PUBLIC_BASE_URL',
      'must be set when PORT is 0 (an ephemeral port has no address to link to)',
    );
  const publicBaseUrl = e.PUBLIC_BASE_URL ?? `http://localhost:${e.PORT}`;
  let cors: string[];
  try {
    cors = corsOrigins(e.CORS_ORIGINS);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(
      'CORS_ORIGINS',
      'must be a comma-separated list of exact origins (https://app.example.com)',
    );
  }
  // the SMART server's issuer (src/oauth/urls.ts) is its own: tokens it signs for an app, scoped
  // to /fhir, would otherwise pass as the gateway's own on /auth, /patient and /admin
  if (e.JWT_ISSUER !== undefined && e.JWT_ISSUER.replace(/\/+$/, '') === `${publicBaseUrl}/oauth`)
    throw new ConfigError(
      'JWT_ISSUER',
      "must not be the SMART authorization server's issuer (PUBLIC_BASE_URL/oauth)",
    );
  const config: Config = {
    logLevel: e.LOG_LEVEL,
    port: e.PORT,
    host: e.HOST,
    publicBaseUrl,
    dataDir: path.resolve(e.DATA_DIR),
    databaseUrl: e.DATABASE_URL,
    databaseQueryTimeoutMs: e.DATABASE_QUERY_TIMEOUT_MS,
    fhir: {
      baseUrl: e.FHIR_BASE_URL,
      embeddedPort: e.FHIR_EMBEDDED_PORT,
      timeoutMs: e.FHIR_TIMEOUT_MS,
      maxConnections: e.FHIR_MAX_CONNECTIONS,
      panelCacheTtlSeconds: e.PANEL_CACHE_TTL,
      directoryTypes: directoryTypes(e.FHIR_DIRECTORY_TYPES),
      auth: fhirAuth(e),
    },
    mail: { smtpUrl: e.SMTP_URL, from: e.MAIL_FROM },
    appName: e.APP_NAME,
    signupUrl: e.SIGNUP_URL ?? `${publicBaseUrl}/signup`,
    firstAdmin: firstAdmin(e),
    passwordMinLength: e.PASSWORD_MIN_LENGTH,
    passwordHashPriority: e.PASSWORD_HASH_PRIORITY,
    passwordHashThreads: passwordHashThreads(e),
    accessCodeTtlSeconds: e.ACCESS_CODE_TTL,
    adminCodeInResponse: e.ADMIN_CODE_IN_RESPONSE,
    resetCodeTtlSeconds: e.RESET_CODE_TTL,
    resetUrl: e.RESET_URL ?? `${publicBaseUrl}/reset-password`,
    appSecret: e.APP_SECRET,
    appSecretPrevious: e.APP_SECRET_PREVIOUS,
    jwt: {
      privateKey: e.JWT_PRIVATE_KEY,
      previousKeys: e.JWT_PREVIOUS_KEYS,
      issuer: e.JWT_ISSUER ?? publicBaseUrl,
      audience: e.JWT_AUDIENCE,
      accessTokenTtlSeconds: e.ACCESS_TOKEN_TTL,
      refreshTokenTtlSeconds: e.REFRESH_TOKEN_TTL,
      sessionMaxAgeSeconds: e.SESSION_MAX_AGE,
    },
    corsOrigins: cors,
    trustProxy: e.TRUST_PROXY,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    // every core serves requests unless told otherwise
    workers: e.WORKERS ?? os.availableParallelism(),
    workerWatchdogMs: e.WORKER_WATCHDOG_SECONDS * 1000,
    metrics: { token: e.METRICS_TOKEN },
  };
  return deepFreeze(config);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
