import fs from 'node:fs';
import type { AuditRow } from '../../db/schema.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { type Gateway, startGateway } from '../../src/server.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, type CallInit, httpCaller, tempDir } from '../helpers/gateway.js';
import { codeIn, mailsTo } from '../helpers/journey.js';
import { createTestSchema, type TestSchema } from '../helpers/postgres.js';
import type { SmtpCapture } from '../helpers/smtp.js';

/**
 * The whole gateway (real database, FHIR server over loopback, SMTP) with its pino output
 * captured line by line, so a test can read the request log next to the audit trail.
 * (tests/helpers/gateway.ts starts it with a silent logger.)
 */

export type LogLine = Record<string, unknown> & { msg?: string; req_id?: string };

export interface AuditedGateway extends Gateway {
  /** Every log line so far, parsed. */
  readonly lines: LogLine[];
  /** Every log line so far, as written. */
  logText(): string;
  call(pathAndQuery: string, init?: CallInit): Promise<Response>;
  login(email: string, password: string): Promise<string>;
  adminToken(): Promise<string>;
  /** Waits for the work after the answers (audit look-ups) and writes the trail's buffer. */
  settle(): Promise<void>;
  /** The audit rows of one request, oldest first (after settle). */
  auditOf(requestId: string): Promise<AuditRow[]>;
  /** The request log line of one request. */
  logOf(requestId: string): LogLine | undefined;
}

export interface AuditedGatewayOptions {
  readonly dialect: 'sqlite' | 'postgres';
  readonly env?: Record<string, string>;
}

export async function startAuditedGateway(options: AuditedGatewayOptions): Promise<AuditedGateway> {
  const dataDir = tempDir();
  let schema: TestSchema | undefined;
  if (options.dialect === 'postgres') schema = await createTestSchema();
  const config = loadConfig({
    PORT: '0',
    LOG_LEVEL: 'info',
    DATA_DIR: dataDir,
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PUBLIC_BASE_URL: 'http://gateway.test',
    ...(schema ? { DATABASE_URL: schema.url } : {}),
    ...options.env,
  });
  const raw: string[] = [];
  const lines: LogLine[] = [];
  const stream = {
    write: (text: string) => {
      raw.push(text);
      lines.push(JSON.parse(text) as LogLine);
    },
  };
  const gateway = await startGateway(config, { logger: createLogger('info', stream) });

  const call = httpCaller(gateway.url);
  const login = async (email: string, password: string) => {
    const response = await call('/auth/login', { method: 'POST', json: { email, password } });
    if (response.status !== 200) throw new Error(`login failed: ${response.status}`);
    return ((await response.json()) as { token: string }).token;
  };
  let admin: string | undefined;
  const settle = async () => {
    await gateway.deps.background.drain();
    await gateway.deps.auditTrail.flush();
  };

  return {
    ...gateway,
    lines,
    logText: () => raw.join(''),
    call,
    login,
    adminToken: async () => {
      admin ??= await login(ADMIN_EMAIL, ADMIN_PASSWORD);
      return admin;
    },
    settle,
    auditOf: async (requestId) => {
      await settle();
      return gateway.deps.db
        .selectFrom('audit_log')
        .selectAll()
        .where('request_id', '=', requestId)
        .orderBy('id')
        .execute();
    },
    logOf: (requestId) => lines.find((l) => l.req_id === requestId && l.msg === 'request'),
    close: async () => {
      await gateway.close();
      await schema?.drop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface Account {
  readonly email: string;
  readonly fhirId: string;
  readonly userId: string;
  readonly code: string;
}

/** An admin creates the account (slim endpoint); its access code is read from the mail. */
export async function createAccount(
  gw: AuditedGateway,
  smtp: SmtpCapture,
  role: 'patient' | 'practitioner',
  body: Record<string, unknown>,
): Promise<Account> {
  const response = await gw.call(`/fhir/${role}`, {
    method: 'POST',
    token: await gw.adminToken(),
    json: body,
  });
  if (response.status !== 201) throw new Error(`create failed: ${response.status} ${await response.text()}`);
  const { fhir_id, user_id } = (await response.json()) as { fhir_id: string; user_id: string };
  const email = String(body.email);
  // generous: under a loaded CI the outbox may take a few seconds
  const [mail] = await mailsTo(smtp, email, 1, 20_000);
  return { email, fhirId: fhir_id, userId: user_id, code: codeIn(mail!) };
}

/** Signs the account up with its code and returns the access token. */
export async function signUp(gw: AuditedGateway, account: Account, password: string): Promise<string> {
  const response = await gw.call('/auth/signup', {
    method: 'POST',
    json: { email: account.email, access_code: account.code, password },
  });
  if (response.status !== 201) throw new Error(`signup failed: ${response.status} ${await response.text()}`);
  return ((await response.json()) as { token: string }).token;
}

/** The request id the gateway answered with. */
export function requestIdOf(response: Response): string {
  const id = response.headers.get('x-request-id');
  if (!id) throw new Error('no X-Request-Id');
  return id;
}
