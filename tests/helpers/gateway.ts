import fs from 'node:fs';
import { inject } from 'vitest';
import type { Role } from '../../db/schema.js';
import type { Clock } from '../../src/clock.js';
import { loadConfig } from '../../src/config.js';
import { uuidv7 } from '../../src/ids.js';
import { createLogger } from '../../src/logger.js';
import { type Gateway, startGateway } from '../../src/server.js';
import { insertUser } from '../../src/users/userRepository.js';
import { type HapiUpstream, startHapiUpstream } from './hapiUpstream.js';
import { createTestSchema, type TestSchema } from './postgres.js';
import { tempDir } from './tempDir.js';

export const ADMIN_EMAIL = 'admin@example.com';
export const ADMIN_PASSWORD = 'correct horse battery staple';
export const USER_PASSWORD = 'a long and plain passphrase';

export interface TestGateway extends Gateway {
  readonly dataDir: string;
  /** The HAPI-flavoured upstream, when the gateway was started in front of one. */
  readonly hapi: HapiUpstream | undefined;
  /** fetch against the gateway: `call('/auth/login', {method: 'POST', json: {...}})`. */
  call(pathAndQuery: string, init?: CallInit): Promise<Response>;
  login(email: string, password: string): Promise<string>;
  adminToken(): Promise<string>;
  seedUser(input: SeedUser): Promise<{ id: string; email: string; password: string }>;
}

export interface CallInit extends Omit<RequestInit, 'body'> {
  json?: unknown;
  body?: string;
  token?: string;
}

export interface SeedUser {
  role: Role;
  email?: string;
  fhirId?: string | null;
  registered?: boolean;
  active?: boolean;
  password?: string;
}

export interface TestGatewayOptions {
  dialect?: 'sqlite' | 'postgres';
  env?: Record<string, string>;
  clock?: Clock;
  dataDir?: string;
  /**
   * Default `embedded`; `hapi` starts a HAPI-flavoured FHIR server and points the gateway at it;
   * `hapi-real` points it at the real HAPI FHIR server shared by the whole run (hapiReal.ts).
   */
  upstream?: UpstreamFlavour;
  /** As a cluster worker has it (src/cluster.ts): false while other workers still start. */
  peersReady?: () => boolean;
}

export { tempDir };

/**
 * The FHIR servers the suites run against: the embedded default, a HAPI-flavoured one
 * (hapiUpstream.ts) and, when Java and Maven are there, a real HAPI FHIR JPA server started once
 * for the run (hapiReal.ts). Its data outlives each test file: suites on it use unique emails and
 * look only at resources they created.
 */
export type UpstreamFlavour = 'embedded' | 'hapi' | 'hapi-real';
const hapiRealBaseUrl = inject('hapiRealBaseUrl');
export const UPSTREAMS: readonly UpstreamFlavour[] = [
  'embedded',
  'hapi',
  ...(hapiRealBaseUrl ? (['hapi-real'] as const) : []),
];

/**
 * The environment that points a gateway at the real HAPI FHIR server (no auth in front of it).
 * Every gateway gets a public URL of its own there, so its account identifiers
 * (`<PUBLIC_BASE_URL>/identifiers/account-email`) never meet another gateway's on the shared server.
 */
function hapiRealEnv(): Record<string, string> {
  if (!hapiRealBaseUrl)
    throw new Error('the real HAPI FHIR tier is not running in this test run (see its [tests] line)');
  return {
    FHIR_BASE_URL: hapiRealBaseUrl,
    FHIR_AUTH: 'none',
    PUBLIC_BASE_URL: `http://gateway-${uuidv7().slice(-12)}.test`,
  };
}

/** `fetch` on `baseUrl`, with a JSON body and a bearer token made easy. */
export function httpCaller(baseUrl: string) {
  return (pathAndQuery: string, init: CallInit = {}) => {
    const { json, token, headers, ...rest } = init;
    const h = new Headers(headers);
    if (json !== undefined) h.set('content-type', 'application/json');
    if (token) h.set('authorization', `Bearer ${token}`);
    return fetch(`${baseUrl}${pathAndQuery}`, {
      ...rest,
      headers: h,
      body: json !== undefined ? JSON.stringify(json) : init.body,
    });
  };
}

/** The whole gateway — real SQLite/PostgreSQL, embedded FHIR over loopback HTTP — on ephemeral ports. */
export async function startTestGateway(options: TestGatewayOptions = {}): Promise<TestGateway> {
  const dataDir = options.dataDir ?? tempDir();
  let schema: TestSchema | undefined;
  if (options.dialect === 'postgres') schema = await createTestSchema();
  const hapi = options.upstream === 'hapi' ? await startHapiUpstream() : undefined;
  const config = loadConfig({
    PORT: '0',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    DATA_DIR: dataDir,
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PUBLIC_BASE_URL: 'http://gateway.test',
    ...(schema ? { DATABASE_URL: schema.url } : {}),
    ...hapi?.gatewayEnv,
    ...(options.upstream === 'hapi-real' ? hapiRealEnv() : {}),
    ...options.env,
  });
  const gateway = await startGateway(config, {
    logger: createLogger(config.logLevel),
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.peersReady ? { peersReady: options.peersReady } : {}),
  });
  let adminToken: string | undefined;

  const call = httpCaller(gateway.url);

  const login = async (email: string, password: string) => {
    const response = await call('/auth/login', { method: 'POST', json: { email, password } });
    if (response.status !== 200) throw new Error(`login failed: ${response.status} ${await response.text()}`);
    return ((await response.json()) as { token: string }).token;
  };

  return {
    ...gateway,
    dataDir,
    call,
    login,
    adminToken: async () => {
      adminToken ??= await login(ADMIN_EMAIL, ADMIN_PASSWORD);
      return adminToken;
    },
    seedUser: async (input) => {
      const id = uuidv7();
      const email = input.email ?? `${input.role}-${id.slice(-8)}@example.com`;
      const password = input.password ?? USER_PASSWORD;
      const registered = input.registered ?? true;
      const now = new Date().toISOString();
      await insertUser(gateway.deps.db, {
        id,
        email,
        role: input.role,
        fhir_resource_id: input.fhirId === undefined ? uuidv7() : input.fhirId,
        access_code_hash: null,
        access_code_expires_at: null,
        is_registered: registered ? 1 : 0,
        is_active: input.active === false ? 0 : 1,
        password_hash: registered ? await gateway.deps.passwords.hash(password) : null,
        created_by_admin: 1,
        created_at: now,
        updated_at: now,
        registered_at: registered ? now : null,
        last_login_at: null,
      });
      return { id, email, password };
    },
    hapi,
    close: async () => {
      await gateway.close();
      await hapi?.close();
      await schema?.drop();
      if (!options.dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
