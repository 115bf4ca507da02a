import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../db/connection.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, tempDir } from '../helpers/gateway.js';
import { createTestSchema, DIALECTS } from '../helpers/postgres.js';
import { type RunningProcess, startGatewayProcess, startStandaloneFhir } from '../helpers/processes.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * "No half-made accounts, no lost emails — also when the process is killed halfway." A burst of
 * keyed patient creations, the gateway (a real `npm start` process) killed with SIGKILL at
 * random moments and restarted on the same data, every request retried with its key until
 * answered: each ends in 201 with its first answer, with no duplicate account or FHIR resource,
 * no unlisted orphan, and a mail for every account. The FHIR server runs on its own (`npm run
 * fhir`); mail goes to a real SMTP listener. CRASH_RUNS repeats it (CI: 1; see docs/operations.md).
 */

const RUNS = Number(process.env.CRASH_RUNS ?? 1);
const REQUESTS = 30;
const KILLS = 3;
const RETRY_DEADLINE_MS = 60_000;

interface Answer {
  status: number;
  body: Record<string, unknown>;
  retryAfter: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const running: { kill(): Promise<void> }[] = [];
afterAll(async () => {
  for (const r of running.reverse()) await r.kill();
});

async function create(url: string, token: string, key: string, email: string): Promise<Answer> {
  const response = await fetch(`${url}/fhir/patient`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'idempotency-key': key },
    body: JSON.stringify({ name: 'Crash Test', email, dob: '1990-01-01' }),
  });
  const text = await response.text();
  return {
    status: response.status,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
    retryAfter: Number(response.headers.get('retry-after') ?? 1),
  };
}

async function adminToken(url: string): Promise<string> {
  const response = await fetch(`${url}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD }),
  });
  return ((await response.json()) as { token: string }).token;
}

async function countIntents(url: string | undefined, dataDir: string) {
  const database = openDatabase({ databaseUrl: url, dataDir });
  try {
    const rows = await database.db.selectFrom('provisioning_intents').select(['state', 'attempts']).execute();
    const byState: Record<string, number> = {};
    for (const r of rows) byState[r.state] = (byState[r.state] ?? 0) + 1;
    return { ...byState, reconciled: rows.filter((r) => r.attempts > 1).length };
  } finally {
    await database.close();
  }
}

/** The key's row and its intents, for the message of a key that never settles (no codes or bodies). */
async function keyDiagnosis(url: string | undefined, dataDir: string, key: string): Promise<string> {
  const database = openDatabase({ databaseUrl: url, dataDir });
  try {
    const row = await database.db
      .selectFrom('idempotency_keys')
      .select(['state', 'locked_until', 'intent_id', 'created_at'])
      .where('key', '=', key)
      .executeTakeFirst();
    const intents = await database.db
      .selectFrom('provisioning_intents')
      .select([
        'id',
        'state',
        'fhir_id',
        'user_id',
        'lease_until',
        'attempts',
        'last_error',
        'created_at',
        'updated_at',
      ])
      .where('idempotency_key', '=', key)
      .execute();
    return JSON.stringify({ now: new Date().toISOString(), key: row, intents });
  } finally {
    await database.close();
  }
}

async function crashRun(dialect: 'sqlite' | 'postgres', run: number, smtp: SmtpCapture, fhirBase: string) {
  const dataDir = tempDir('ff-crash-');
  const schema = dialect === 'postgres' ? await createTestSchema() : undefined;
  const env = {
    DATA_DIR: dataDir,
    SMTP_URL: smtp.url,
    FHIR_BASE_URL: fhirBase,
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    LOG_LEVEL: 'warn',
    ...(schema ? { DATABASE_URL: schema.url } : {}),
  };
  let gateway = await startGatewayProcess(env);
  const port = gateway.port;
  running.push(gateway.proc);
  const token = await adminToken(gateway.url);
  const requests = Array.from({ length: REQUESTS }, (_, i) => ({
    key: `crash-${dialect}-${run}-${i}`,
    email: `crash-${dialect}-${run}-${i}@example.com`,
  }));
  const first = new Map<string, Record<string, unknown>>();
  const record = (key: string, answer: Answer) => {
    if (answer.status !== 201) return;
    const known = first.get(key);
    // a replay must be the first answer, exactly
    if (known) expect({ key, ...answer.body }).toEqual({ key, ...known });
    else first.set(key, answer.body);
  };

  for (let kill = 0; kill < KILLS; kill++) {
    const url = gateway.url;
    const inFlight = requests.map((r) =>
      create(url, token, r.key, r.email).then(
        (answer) => record(r.key, answer),
        () => undefined, // the process died under it
      ),
    );
    // kill mid-burst: after a random share of what is left has been answered (or a random moment)
    const remaining = REQUESTS - first.size;
    const target = first.size + 1 + Math.floor(Math.random() * Math.max(1, remaining / 2));
    const until = Date.now() + 200 + Math.floor(Math.random() * 3000);
    while (first.size < target && Date.now() < until) await sleep(5);
    await gateway.proc.kill('SIGKILL');
    await Promise.allSettled(inFlight);
    gateway = await startGatewayProcess(env, port);
    running.push(gateway.proc);
  }

  const answeredBeforeLastKill = first.size;
  // every request again with its key, until it is answered
  const deadline = Date.now() + RETRY_DEADLINE_MS;
  let waited = 0;
  for (const r of requests) {
    for (;;) {
      const answer = await create(gateway.url, token, r.key, r.email);
      record(r.key, answer);
      if (answer.status === 201) break;
      expect([409, 502, 503, 504], `${r.key}: ${JSON.stringify(answer.body)}`).toContain(answer.status);
      if (Date.now() > deadline)
        throw new Error(
          `${r.key} still answers ${answer.status} ${JSON.stringify(answer.body)}\n--- key and intents ---\n${await keyDiagnosis(schema?.url, dataDir, r.key)}\n--- gateway output ---\n${gateway.proc.output().slice(-6000)}`,
        );
      waited++;
      await sleep(Math.min(answer.retryAfter, 3) * 1000);
    }
  }
  expect(first.size).toBe(REQUESTS);
  const intents = await countIntents(schema?.url, dataDir);
  console.info(
    `[crash ${dialect} #${run}] answered during the kills: ${answeredBeforeLastKill}/${REQUESTS}; retries that had to wait: ${waited}; intents: ${JSON.stringify(intents)}`,
  );

  // one account per email, linked to the FHIR resource its answer named, and one resource per email
  const database = openDatabase({ databaseUrl: schema?.url, dataDir });
  try {
    const users = await database.db
      .selectFrom('users')
      .select(['email', 'fhir_resource_id'])
      .where('email', 'like', `crash-${dialect}-${run}-%`)
      .execute();
    expect(users).toHaveLength(REQUESTS);
    for (const r of requests) {
      const user = users.filter((u) => u.email === r.email);
      expect(user, r.email).toHaveLength(1);
      expect(user[0]?.fhir_resource_id).toBe(first.get(r.key)?.fhir_id);
    }
    const pending = await database.db
      .selectFrom('provisioning_intents')
      .select('id')
      .where('state', '=', 'pending')
      .execute();
    expect(pending).toEqual([]);
    const orphans = await database.db.selectFrom('fhir_orphans').select('fhir_id').execute();
    const listed = new Set(orphans.map((o) => o.fhir_id));
    const system = `http://127.0.0.1:${port}/identifiers/account-email`;
    const upstream = (await (
      await fetch(`${fhirBase}/Patient?identifier=${encodeURIComponent(`${system}|`)}&_count=1000`)
    ).json()) as {
      entry?: { resource: { id: string; identifier: { system: string; value: string }[] } }[];
    };
    const resources = (upstream.entry ?? [])
      .map((e) => e.resource)
      .filter((p) =>
        p.identifier.some((i) => i.system === system && i.value.startsWith(`crash-${dialect}-${run}-`)),
      );
    const linked = new Set(users.map((u) => u.fhir_resource_id));
    // no duplicates; every resource has its account or is listed for an operator
    expect(resources.filter((p) => !linked.has(p.id) && !listed.has(p.id))).toEqual([]);
    expect(resources.filter((p) => linked.has(p.id))).toHaveLength(REQUESTS);
  } finally {
    await database.close();
  }

  // every account has its mail (at least once: delivery is at-least-once across a crash)
  const mailed = async () => {
    const to = new Set(
      smtp.messages.flatMap(
        (m) => JSON.stringify(m.to ?? '').match(/crash-[a-z]+-\d+-\d+@example\.com/g) ?? [],
      ),
    );
    return requests.every((r) => to.has(r.email));
  };
  const mailDeadline = Date.now() + 30_000;
  while (!(await mailed()) && Date.now() < mailDeadline) await sleep(200);
  expect(await mailed()).toBe(true);
  await gateway.proc.kill('SIGTERM');
}

describe.each(DIALECTS)('provisioning killed with SIGKILL mid-burst (%s)', (dialect) => {
  it(
    `ends every keyed create in one 201 with its first answer, no duplicates, no unlisted orphans, every mail (${RUNS} run(s))`,
    async () => {
      const smtp = await startSmtpCapture();
      const fhir = await startStandaloneFhir(tempDir('ff-crash-fhir-'));
      running.push(fhir.proc as RunningProcess);
      try {
        for (let run = 0; run < RUNS; run++) await crashRun(dialect, run, smtp, fhir.baseUrl);
      } finally {
        await smtp.close();
      }
    },
    RUNS * 150_000,
  );
});
