import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { ParsedMail } from 'mailparser';
import { afterEach, describe, expect, it } from 'vitest';
import { auditEventBatch, batchEntryFailures } from '../../src/audit/auditEventLane.js';
import { generateAccessCode } from '../../src/auth/accessCodes.js';
import { createMailer, type Mailer } from '../../src/email/mailer.js';
import {
  type AccessCodeMailJob,
  claimOutboxRow,
  enqueueAccessCodeMail,
  enqueueFhirAuditEvent,
} from '../../src/email/outbox.js';
import { backoffMs, deferredRecipient, refusedForGood } from '../../src/email/outboxFailures.js';
import {
  DEFAULT_MAX_ATTEMPTS,
  type OutboxWorker,
  type OutboxWorkerOptions,
  startOutboxWorker,
} from '../../src/email/outboxWorker.js';
import { createFhirService, type FhirService } from '../../src/fhir/fhirService.js';
import { seal } from '../../src/secrets.js';
import { ManualClock } from '../helpers/clock.js';
import { startFakeUpstream, unusedPort } from '../helpers/fakeUpstream.js';
import { type PostgresProxy, startPostgresProxy } from '../helpers/pgProxy.js';
import { DIALECTS, TEST_DATABASE_URL } from '../helpers/postgres.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';
import { captureLogger, codeForms, type EmailTestDb, openEmailTestDb } from './fixtures.js';

const START = new Date('2026-11-24T14:03:00Z');
const APP_NAME = 'Test Clinic';
const SIGNUP_URL = 'https://app.example/signup';
const HOUR = 3_600_000;

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The database the worker uses stops serving it until `end()`: SQLite held by another writer's
 * transaction, PostgreSQL gone behind the proxy (every connection cut, new ones refused).
 */
async function databaseAway(t: EmailTestDb, proxy: PostgresProxy): Promise<{ end(): Promise<void> }> {
  if (t.dialect === 'postgres') {
    proxy.down();
    return { end: async () => proxy.restore() };
  }
  await sql`BEGIN IMMEDIATE`.execute(t.db);
  return { end: async () => void (await sql`COMMIT`.execute(t.db)) };
}

function recipients(mail: ParsedMail | undefined): string[] {
  const to = mail?.to;
  if (!to) return [];
  return (Array.isArray(to) ? to : [to]).flatMap((a) => a.value.map((v) => v.address ?? ''));
}

describe('backoffMs', () => {
  it('doubles from 5 s with +-20 % jitter and stops growing at 1 h', () => {
    expect(backoffMs(1, () => 0.5)).toBe(5_000);
    expect(backoffMs(2, () => 0.5)).toBe(10_000);
    expect(backoffMs(3, () => 0.5)).toBe(20_000);
    expect(backoffMs(1, () => 0)).toBe(4_000);
    expect(backoffMs(1, () => 1)).toBe(6_000);
    expect(backoffMs(30, () => 1)).toBe(HOUR);
    expect(backoffMs(30, () => 0)).toBe(0.8 * HOUR);
  });

  it('retries a code mail for longer than the longest code lives, even at the shortest jitter', () => {
    let waited = 0;
    for (let attempt = 1; attempt < DEFAULT_MAX_ATTEMPTS; attempt++) waited += backoffMs(attempt, () => 0);
    // ACCESS_CODE_TTL is 24 h at most (src/config.ts): the code expires before its mail is given up
    expect(waited).toBeGreaterThan(24 * HOUR);
  });
});

describe('the AuditEvent lane batch', () => {
  it('creates each event with one POST entry', () => {
    const events = [{ resourceType: 'AuditEvent', id: 'a' }, { resourceType: 'AuditEvent' }];
    expect(auditEventBatch(events)).toEqual({
      resourceType: 'Bundle',
      type: 'batch',
      entry: events.map((resource) => ({ resource, request: { method: 'POST', url: 'AuditEvent' } })),
    });
  });

  const response = (...statuses: unknown[]) => ({
    resourceType: 'Bundle',
    type: 'batch-response',
    entry: statuses.map((status) => ({ response: { status } })),
  });
  it.each([
    ['every entry created', response('201 Created', '201'), 2, [undefined, undefined]],
    ['one refused', response('201 Created', '400 Bad Request'), 2, [undefined, 'http_400']],
    ['a status that is no text', response(201, '201 Created'), 2, ['http_none', undefined]],
    [
      'an entry without a response',
      { resourceType: 'Bundle', entry: [null, {}] },
      2,
      ['http_none', 'http_none'],
    ],
    // not an answer to this batch: its events go one at a time
    ['fewer entries than sent', response('201 Created'), 2, undefined],
    ['an OperationOutcome', { resourceType: 'OperationOutcome', issue: [] }, 1, undefined],
    ['entries that are no list', { resourceType: 'Bundle', entry: {} }, 1, undefined],
    ['no body', undefined, 1, undefined],
  ])('reads a batch-response with %s', (_, answer, sent, failures) => {
    expect(batchEntryFailures(answer, sent)).toEqual(failures);
  });
});

describe.each(DIALECTS)('outbox worker on %s', (dialect) => {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  interface Harness {
    readonly t: EmailTestDb;
    readonly clock: ManualClock;
    readonly sealingKey: Buffer;
    readonly smtp: SmtpCapture;
    readonly logs: string[];
    readonly fhir: FhirService;
    mailer(url?: string): Mailer;
    worker(
      options?: OutboxWorkerOptions,
      deps?: Partial<Parameters<typeof startOutboxWorker>[0]>,
    ): OutboxWorker;
    enqueue(overrides?: Partial<AccessCodeMailJob>): Promise<{ id: string; code: string; to: string }>;
    /** Fails the test if any log line ever held a code or a sealed payload. */
    expectLogsClean(secrets: string[]): void;
  }

  async function harness(): Promise<Harness> {
    const t = await openEmailTestDb(dialect);
    cleanups.push(() => t.close());
    const smtp = await startSmtpCapture();
    cleanups.push(() => smtp.close());
    const clock = new ManualClock(START);
    const sealingKey = randomBytes(32);
    const { logger, lines } = captureLogger();
    // a FHIR service that is never called in the mail tests
    const fhir = createFhirService({
      baseUrl: `http://127.0.0.1:${await unusedPort()}/fhir`,
      timeoutMs: 500,
      auth: { kind: 'none' },
    });
    cleanups.push(() => fhir.close());
    const mailer = (url = smtp.url) => {
      const m = createMailer({
        smtpUrl: url,
        from: 'no-reply@clinic.example',
        dataDir: t.dataDir,
        logger,
        timeoutMs: 2_000,
      });
      cleanups.push(() => m.close());
      return m;
    };
    const defaultMailer = mailer();
    return {
      t,
      clock,
      sealingKey,
      smtp,
      logs: lines,
      fhir,
      mailer,
      worker: (options = {}, deps = {}) => {
        const w = startOutboxWorker(
          {
            db: t.db,
            clock,
            mailer: defaultMailer,
            fhir,
            sealingKey,
            // these mails have no accounts behind them: whether a code is current is asked of a real database in tests/auth/codeMails.test.ts
            codeState: async () => 'current' as const,
            appName: APP_NAME,
            signupUrl: SIGNUP_URL,
            logger,
            ...deps,
          },
          { autoStart: false, ...options },
        );
        cleanups.push(() => w.stop());
        return w;
      },
      enqueue: async (overrides = {}) => {
        const code = generateAccessCode();
        const to = overrides.to ?? `user-${randomBytes(4).toString('hex')}@example.com`;
        const id = await enqueueAccessCodeMail(t.db, clock, sealingKey, {
          template: 'access_code',
          to,
          name: 'Pat Example',
          role: 'patient',
          purpose: 'signup',
          code,
          expiresAt: new Date(clock.now().getTime() + 24 * HOUR).toISOString(),
          ...overrides,
        });
        return { id, code: overrides.code ?? code, to };
      },
      expectLogsClean: (secrets) => {
        const all = lines.join('\n');
        for (const s of secrets) for (const form of codeForms(s)) expect(all).not.toContain(form);
        expect(all).not.toContain('code_sealed');
        expect(all).not.toMatch(/v1\.[A-Za-z0-9_-]{16}\./);
      },
    };
  }

  it('sends an access-code mail over SMTP with the subject, code, expiry, prefilled link, role wording and ignore line', async () => {
    const h = await harness();
    const { code } = await h.enqueue({ to: 'pat+tag@example.com', name: 'Pat <Example>' });
    expect(await h.worker().runOnce()).toBe(1);
    const [mail] = await h.smtp.waitFor(1);
    expect(recipients(mail)).toEqual(['pat+tag@example.com']);
    expect(mail?.subject).toBe('Your Access Code to Register on Test Clinic');
    const link = 'https://app.example/signup?email=pat%2Btag%40example.com';
    const text = mail?.text ?? '';
    const html = typeof mail?.html === 'string' ? mail.html : '';
    for (const part of [text, html]) {
      expect(part).toContain(code);
      expect(part).toContain('2026-11-25 14:03 UTC');
      expect(part).toContain('in 24 hours');
      expect(part).toContain('to see your health records');
      expect(part).toContain('If you were not expecting this email, you can ignore it.');
    }
    expect(text).toContain('Hello Pat <Example>,');
    expect(html).toContain('Hello Pat &lt;Example&gt;,');
    expect(text).toContain(link);
    expect(html).toContain(`href="${link}"`);
    const urls = [...text.matchAll(/https?:\/\/\S+/g), ...html.matchAll(/href="([^"]+)"/g)].map((m) => m[0]);
    for (const url of urls) for (const form of codeForms(code)) expect(url).not.toContain(form);
    h.expectLogsClean([code]);
  });

  it('never holds the code in plaintext: sealed before sending, purged after, not in the raw database files', async () => {
    const h = await harness();
    const { id, code, to } = await h.enqueue();
    const scan = async () => {
      for (const row of await h.t.outboxRows()) {
        for (const form of codeForms(code)) expect(JSON.stringify(row)).not.toContain(form);
      }
      const raw = h.t.rawSqliteBytes();
      if (dialect === 'sqlite') expect(raw.includes(Buffer.from(to))).toBe(true); // the scan sees real data
      for (const form of codeForms(code)) expect(raw.includes(Buffer.from(form))).toBe(false);
    };
    await scan();
    const sealed = (JSON.parse((await h.t.outboxRows())[0]?.payload ?? '{}') as { code_sealed: string })
      .code_sealed;
    expect(sealed).toMatch(/^v1\./);

    expect(await h.worker().runOnce()).toBe(1);
    await h.smtp.waitFor(1);
    const [row] = await h.t.outboxRows();
    expect(row).toMatchObject({
      id,
      status: 'sent',
      sent_at: START.toISOString(),
      locked_until: null,
      attempts: 1,
    });
    expect(JSON.parse(row?.payload ?? '')).toEqual({
      template: 'access_code',
      to,
      purpose: 'signup',
      purged: true,
    });
    expect(row?.payload).not.toContain(sealed);
    await scan();
    h.expectLogsClean([code, sealed]);
  });

  it('keeps the row pending with attempts+1 and a backoff while SMTP is down, then delivers it exactly once', async () => {
    const h = await harness();
    const down = await startSmtpCapture();
    const port = down.port;
    await down.close();
    const worker = h.worker({}, { mailer: h.mailer(`smtp://127.0.0.1:${port}`) });
    const { id, code } = await h.enqueue();

    expect(await worker.runOnce()).toBe(1);
    let [row] = await h.t.outboxRows();
    expect(row).toMatchObject({ id, status: 'pending', attempts: 1, locked_until: null, sent_at: null });
    expect(row?.last_error).toMatch(/^E[A-Z]+/);
    const delay = Date.parse(row?.next_attempt_at ?? '') - START.getTime();
    expect(delay).toBeGreaterThanOrEqual(4_000);
    expect(delay).toBeLessThanOrEqual(6_000);
    expect(await worker.runOnce()).toBe(0); // not before the backoff ends

    const back = await startSmtpCapture({ port });
    cleanups.push(() => back.close());
    h.clock.advance(6_001);
    expect(await worker.runOnce()).toBe(1);
    await back.waitFor(1);
    [row] = await h.t.outboxRows();
    expect(row).toMatchObject({ status: 'sent', attempts: 2, last_error: null });

    h.clock.advance(2 * HOUR);
    expect(await worker.runOnce()).toBe(0);
    await pause(200);
    expect(back.messages).toHaveLength(1);
    expect(back.messages[0]?.text).toContain(code);
    h.expectLogsClean([code]);
  });

  it('delivers mail left unsent by a stopped worker when a new worker starts on the same database', async () => {
    const h = await harness();
    const deadPort = await unusedPort();
    const first = h.worker({}, { mailer: h.mailer(`smtp://127.0.0.1:${deadPort}`) });
    await h.enqueue();
    await h.enqueue();
    expect(await first.runOnce()).toBe(2);
    await first.stop();
    expect((await h.t.outboxRows()).map((r) => r.status)).toEqual(['pending', 'pending']);

    const other = h.t.openAnother();
    const second = h.worker({}, { db: other.db });
    h.clock.advance(10_000);
    expect(await second.runOnce()).toBe(2);
    await h.smtp.waitFor(2);
    expect((await h.t.outboxRows()).map((r) => r.status)).toEqual(['sent', 'sent']);
  });

  it('takes over a row whose worker died mid-send once its lease expires, and not before', async () => {
    const h = await harness();
    const { id } = await h.enqueue();
    // a worker claims the row, then the process dies before it sends or marks anything
    const leaseUntil = new Date(START.getTime() + 60_000).toISOString();
    expect(await claimOutboxRow(h.t.db, id, START.toISOString(), leaseUntil)).toBeDefined();

    const worker = h.worker({ leaseMs: 60_000 });
    expect(await worker.runOnce()).toBe(0);
    h.clock.advance(60_001);
    expect(await worker.runOnce()).toBe(1);
    await h.smtp.waitFor(1);
    const [row] = await h.t.outboxRows();
    expect(row).toMatchObject({ status: 'sent', attempts: 2 });
  });

  it('delivers each mail exactly once when two workers on two connections race for the same rows', async () => {
    const h = await harness();
    const slow = await startSmtpCapture({ acceptDelayMs: 15 });
    cleanups.push(() => slow.close());
    const sent = await Promise.all(Array.from({ length: 12 }, () => h.enqueue()));
    const other = h.t.openAnother();
    const a = h.worker({ batchSize: 50 }, { mailer: h.mailer(slow.url) });
    const b = h.worker({ batchSize: 50 }, { db: other.db, mailer: h.mailer(slow.url) });

    const [na, nb] = await Promise.all([a.runOnce(), b.runOnce()]);
    expect(na + nb).toBe(12);
    await slow.waitFor(12);
    await pause(200);
    expect(slow.messages).toHaveLength(12);
    expect(slow.messages.flatMap(recipients).sort()).toEqual(sent.map((s) => s.to).sort());
    const rows = await h.t.outboxRows();
    expect(rows.every((r) => r.status === 'sent' && r.attempts === 1)).toBe(true);
  });

  /** A mailer that counts sends in flight, around the real SMTP one. */
  function trackingMailer(real: Mailer, delayMs: number) {
    const state = { active: 0, maxActive: 0, completed: 0 };
    const mailer: Mailer = {
      mode: 'smtp',
      close: () => real.close(),
      send: async (message) => {
        state.active += 1;
        state.maxActive = Math.max(state.maxActive, state.active);
        try {
          await pause(delayMs);
          await real.send(message);
          state.completed += 1;
        } finally {
          state.active -= 1;
        }
      },
    };
    return { mailer, state };
  }

  it('sends right away when woken, without waiting for the poll interval', async () => {
    const h = await harness();
    const worker = h.worker({ autoStart: true, pollIntervalMs: 60_000 });
    await pause(50); // the start-up tick finds nothing; the next poll is a minute away
    await h.enqueue();
    worker.wake();
    await h.smtp.waitFor(1, 2_000);
  });

  it('never runs two ticks at once, however often it is woken or run', async () => {
    const h = await harness();
    const { mailer, state } = trackingMailer(h.mailer(), 5);
    const worker = h.worker({ batchSize: 2 }, { mailer });
    await Promise.all(Array.from({ length: 6 }, () => h.enqueue()));
    for (let i = 0; i < 5; i += 1) worker.wake();
    const counts = await Promise.all([worker.runOnce(), worker.runOnce(), worker.runOnce()]);
    await h.smtp.waitFor(6, 5_000);
    await pause(100);
    expect(state.maxActive).toBe(1);
    expect(h.smtp.messages).toHaveLength(6);
    expect(counts.every((n) => n <= 2)).toBe(true);
  });

  /**
   * The worker's connection, through a proxy `databaseAway` can cut (PostgreSQL); on SQLite the
   * one that gives up on a lock at once, as the gateway's background connection does.
   */
  async function workerDbThatCanGoAway(t: EmailTestDb) {
    const proxy = await startPostgresProxy(TEST_DATABASE_URL ?? 'postgres://127.0.0.1:5432');
    cleanups.push(() => proxy.close());
    const through = t.openVia((url) => proxy.via(url));
    return { proxy, db: dialect === 'sqlite' ? through.background : through.db };
  }

  it('logs one warning while the database is busy or away, not an error per tick, and sends once it is back', async () => {
    const h = await harness();
    const { proxy, db } = await workerDbThatCanGoAway(h.t);
    const { to } = await h.enqueue();
    const away = await databaseAway(h.t, proxy);
    const worker = h.worker({ autoStart: true, pollIntervalMs: 20 }, { db });
    await pause(600); // about 30 ticks
    expect(h.smtp.messages).toHaveLength(0);
    await away.end();
    await h.smtp.waitFor(1, 5_000);
    await worker.stop();
    expect(recipients(h.smtp.messages[0])).toEqual([to]);
    const lines = h.logs.map((l) => JSON.parse(l) as { level: number; msg: string });
    expect(lines.filter((l) => l.level >= 50)).toEqual([]);
    expect(lines.filter((l) => l.msg === 'outbox waits for the database')).toHaveLength(1);
    expect(lines.filter((l) => l.msg === 'outbox: the database answers again')).toHaveLength(1);
  });

  it("sends a mail once when the database refused its 'sent' mark, and marks it when the lease brings it back (review S2)", async () => {
    const h = await harness();
    const { proxy, db } = await workerDbThatCanGoAway(h.t);
    const { to } = await h.enqueue();
    let away: { end(): Promise<void> } | undefined;
    const smtpMailer = h.mailer();
    // the SMTP server takes the mail, then the database goes away before the row is marked
    const mailer: Mailer = {
      ...smtpMailer,
      send: async (message) => {
        await smtpMailer.send(message);
        away ??= await databaseAway(h.t, proxy);
      },
    };
    const worker = h.worker({ leaseMs: 1_000 }, { db, mailer });
    await worker.runOnce().catch(() => undefined);
    await away?.end();
    h.clock.advance(1_001);
    await worker.runOnce();
    await h.smtp.waitFor(1);
    await pause(200);
    expect(h.smtp.messages.map(recipients)).toEqual([[to]]);
    const [row] = await h.t.outboxRows();
    expect(row).toMatchObject({ status: 'sent' });
  });

  it('stop() waits for the running tick to finish and no tick starts afterwards', async () => {
    const h = await harness();
    const { mailer, state } = trackingMailer(h.mailer(), 100);
    await Promise.all(Array.from({ length: 3 }, () => h.enqueue()));
    // the start-up tick claims all three; the 20 ms poll would start more ticks if stop() let it
    const worker = h.worker({ autoStart: true, pollIntervalMs: 20 }, { mailer });
    while (state.active === 0) await pause(5);
    await worker.stop();
    expect(state.active).toBe(0);
    expect(state.completed).toBe(3);
    expect((await h.t.outboxRows()).every((r) => r.status === 'sent')).toBe(true);

    await h.enqueue();
    worker.wake();
    await pause(200);
    expect(state.completed).toBe(3);
    expect((await h.t.outboxRows()).filter((r) => r.status === 'pending')).toHaveLength(1);
  });

  it('gives up after maxAttempts with a warning, and purges the sealed code', async () => {
    const h = await harness();
    const worker = h.worker(
      { maxAttempts: 2, lane: 'email' },
      { mailer: h.mailer(`smtp://127.0.0.1:${await unusedPort()}`) },
    );
    const { id, code, to } = await h.enqueue();
    expect(await worker.runOnce()).toBe(1);
    h.clock.advance(HOUR);
    expect(await worker.runOnce()).toBe(1);
    const [row] = await h.t.mailRows();
    expect(row).toMatchObject({ id, status: 'failed', attempts: 2 });
    expect(JSON.parse(row?.payload ?? '')).toEqual({
      template: 'access_code',
      to,
      purpose: 'signup',
      purged: true,
    });
    const warnings = h.logs.map((l) => JSON.parse(l) as { level: number; msg: string; outbox_id?: string });
    expect(warnings.some((l) => l.level === 40 && l.outbox_id === id && /failed for good/.test(l.msg))).toBe(
      true,
    );
    // the admin learns of it from the trail (these mails have no account behind them)
    expect(await h.t.auditActions()).toEqual(['mail.failed']);
    h.clock.advance(2 * HOUR);
    expect(await worker.runOnce()).toBe(0);
    h.expectLogsClean([code]);
  });

  it('gives up at once on a recipient the server refuses for good (550), and the next mail goes out without waiting', async () => {
    const h = await harness();
    const relay = await startSmtpCapture({ refuse: ['typo@example.com'] });
    cleanups.push(() => relay.close());
    const worker = h.worker({ lane: 'email' }, { mailer: h.mailer(relay.url) });
    const refused = await h.enqueue({ to: 'typo@example.com' });
    expect(await worker.runOnce()).toBe(1);
    const [row] = await h.t.mailRows();
    expect(row).toMatchObject({ id: refused.id, status: 'failed', attempts: 1, last_error: 'smtp_550' });
    // no rest for the lane: one address's refusal says nothing about the server
    await h.enqueue({ to: 'ann@example.com' });
    expect(await worker.runOnce()).toBe(1);
    const [mail] = await relay.waitFor(1);
    expect(recipients(mail)).toEqual(['ann@example.com']);
    expect(await h.t.auditActions()).toEqual(['mail.failed']);
    h.expectLogsClean([refused.code]);
  });

  it.each([
    [{ code: 'EENVELOPE', command: 'RCPT TO', responseCode: 550 }, 'smtp_550'],
    [{ code: 'EENVELOPE', command: 'DATA', responseCode: 554 }, 'smtp_554'],
    [{ code: 'EMESSAGE', command: 'DATA', responseCode: 554 }, 'smtp_554'],
    // the server's own setup or a passing trouble: retried
    [{ code: 'EENVELOPE', command: 'MAIL FROM', responseCode: 530 }, undefined],
    [{ code: 'EENVELOPE', command: 'MAIL FROM', responseCode: 553 }, undefined],
    [{ code: 'EAUTH', command: 'AUTH PLAIN', responseCode: 535 }, undefined],
    [{ code: 'EENVELOPE', command: 'RCPT TO', responseCode: 451 }, undefined],
    [{ code: 'ECONNECTION' }, undefined],
    [new Error('anything else'), undefined],
  ])('refusedForGood(%o) is %s', (error, label) => {
    expect(refusedForGood(error)).toBe(label);
  });

  it.each([
    [{ code: 'EENVELOPE', command: 'RCPT TO', responseCode: 452 }, true],
    [{ code: 'EENVELOPE', command: 'RCPT TO', responseCode: 450 }, true],
    [{ code: 'EENVELOPE', command: 'RCPT TO', responseCode: 550 }, false],
    [{ code: 'EENVELOPE', command: 'MAIL FROM', responseCode: 451 }, false],
    [{ code: 'ECONNECTION' }, false],
    [null, false],
  ])('deferredRecipient(%o) is %s', (error, deferred) => {
    expect(deferredRecipient(error)).toBe(deferred);
  });

  it('retries every mail the server refuses at MAIL FROM (530 authentication required): its setup, not the mails', async () => {
    const h = await harness();
    const relay = await startSmtpCapture({ refuseSender: 530 });
    cleanups.push(() => relay.close());
    const first = await h.enqueue({ to: 'ann@example.com' });
    expect(await h.worker({ lane: 'email' }, { mailer: h.mailer(relay.url) }).runOnce()).toBe(1);
    const [row] = await h.t.mailRows();
    expect(row).toMatchObject({ id: first.id, status: 'pending', attempts: 1 });
    expect(row?.payload).toContain('code_sealed');
    expect(await h.t.auditActions()).toEqual([]);
    // the relay mended: the same code goes out
    h.clock.advance(HOUR);
    expect(await h.worker({ lane: 'email' }).runOnce()).toBe(1);
    const [mail] = await h.smtp.waitFor(1);
    expect(mail?.text).toContain(first.code);
    h.expectLogsClean([first.code]);
  });

  it('retries a recipient put off for now (452 mailbox full), and the next mail goes out without waiting', async () => {
    const h = await harness();
    const relay = await startSmtpCapture({ defer: ['full@example.com'] });
    cleanups.push(() => relay.close());
    const worker = h.worker({ lane: 'email' }, { mailer: h.mailer(relay.url) });
    const full = await h.enqueue({ to: 'full@example.com' });
    expect(await worker.runOnce()).toBe(1);
    const [row] = await h.t.mailRows();
    expect(row).toMatchObject({ id: full.id, status: 'pending', attempts: 1 });
    // no rest for the lane: one full mailbox says nothing about the server
    await h.enqueue({ to: 'ann@example.com' });
    expect(await worker.runOnce()).toBe(1);
    const [mail] = await relay.waitFor(1);
    expect(recipients(mail)).toEqual(['ann@example.com']);
  });

  it('does not send a code that expired while the mail waited, and marks the row failed', async () => {
    const h = await harness();
    await h.enqueue({ expiresAt: new Date(START.getTime() + HOUR).toISOString() });
    h.clock.advance(2 * HOUR);
    expect(await h.worker().runOnce()).toBe(1);
    const [row] = await h.t.outboxRows();
    expect(row).toMatchObject({ status: 'failed', last_error: 'code_expired' });
    expect(row?.payload).not.toContain('code_sealed');
    await pause(100);
    expect(h.smtp.messages).toHaveLength(0);
  });

  it('refuses at send time a row whose recipient would inject headers, without retrying', async () => {
    const h = await harness();
    const now = START.toISOString();
    for (const to of ['a@x.com\r\nBcc: c@z.com', 'a@x.com, b@y.com', 'Alice <a@x.com>']) {
      await h.t.db
        .insertInto('outbox')
        .values({
          id: `00000000-0000-7000-8000-${randomBytes(6).toString('hex')}`,
          kind: 'email',
          payload: JSON.stringify({
            template: 'access_code',
            to,
            name: 'X',
            role: 'patient',
            purpose: 'signup',
            code_sealed: seal(h.sealingKey, generateAccessCode()),
            expiresAt: new Date(START.getTime() + HOUR).toISOString(),
          }),
          status: 'pending',
          attempts: 0,
          next_attempt_at: now,
          locked_until: null,
          last_error: null,
          created_at: now,
          sent_at: null,
        })
        .execute();
    }
    expect(await h.worker({ lane: 'email' }).runOnce()).toBe(3);
    const rows = await h.t.mailRows();
    expect(rows.map((r) => [r.status, r.last_error])).toEqual([
      ['failed', 'invalid_address'],
      ['failed', 'invalid_address'],
      ['failed', 'invalid_address'],
    ]);
    await pause(100);
    expect(h.smtp.messages).toHaveLength(0);
  });

  it('POSTs a queued AuditEvent to the FHIR server and marks it sent; a failing server makes it retry', async () => {
    const h = await harness();
    let answer = 500;
    const upstream = await startFakeUpstream((_req, res) => {
      res.writeHead(answer, { 'content-type': 'application/fhir+json' });
      res.end(
        answer < 300 ? '{"resourceType":"AuditEvent","id":"1"}' : '{"resourceType":"OperationOutcome"}',
      );
    });
    cleanups.push(() => upstream.close());
    const fhir = createFhirService({
      baseUrl: `${upstream.url}/fhir/R4`,
      timeoutMs: 1_000,
      auth: { kind: 'none' },
    });
    cleanups.push(() => fhir.close());
    const worker = h.worker({}, { fhir });
    const event = {
      resourceType: 'AuditEvent',
      type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110' },
      action: 'C',
      recorded: START.toISOString(),
      outcome: '0',
    };
    const id = await enqueueFhirAuditEvent(h.t.db, h.clock, event);

    expect(await worker.runOnce()).toBe(1);
    let [row] = await h.t.outboxRows();
    expect(row).toMatchObject({ id, status: 'pending', attempts: 1, last_error: 'upstream_error' });

    answer = 400;
    h.clock.advance(10_000);
    expect(await worker.runOnce()).toBe(1);
    [row] = await h.t.outboxRows();
    expect(row).toMatchObject({ status: 'pending', attempts: 2, last_error: 'http_400' });

    answer = 201;
    h.clock.advance(HOUR);
    expect(await worker.runOnce()).toBe(1);
    [row] = await h.t.outboxRows();
    expect(row).toMatchObject({
      status: 'sent',
      attempts: 3,
      last_error: null,
      sent_at: h.clock.now().toISOString(),
    });
    expect(upstream.requests).toHaveLength(3);
    for (const req of upstream.requests) {
      expect(req.method).toBe('POST');
      expect(req.url).toBe('/fhir/R4/AuditEvent');
      expect(JSON.parse(req.body)).toEqual(event);
    }
  });
});
