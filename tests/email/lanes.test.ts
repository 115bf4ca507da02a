import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashAccessCode } from '../../src/auth/accessCodes.js';
import { claimOutboxRow, enqueueAccessCodeMail } from '../../src/email/outbox.js';
import { startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';
import { LEASE_MS } from '../../src/leases.js';
import { startTestGateway, type TestGateway, tempDir } from '../helpers/gateway.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * Mail and the AuditEvent mirror are separate lanes: with the FHIR server accepting connections
 * but never answering, a code mail still arrives within seconds, and once the server is back the
 * AuditEvents that waited arrive too. A row claimed by a worker that died is taken over within
 * the short lease, not minutes later.
 */

describe('delivery lanes', () => {
  let hang: net.Server;
  let port: number;
  let gw: TestGateway;
  let smtp: SmtpCapture;
  const sockets = new Set<net.Socket>();

  beforeAll(async () => {
    // a FHIR server that accepts connections and never answers
    hang = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => hang.listen(0, '127.0.0.1', resolve));
    port = (hang.address() as net.AddressInfo).port;
    smtp = await startSmtpCapture();
    gw = await startTestGateway({
      env: { SMTP_URL: smtp.url, FHIR_BASE_URL: `http://127.0.0.1:${port}/fhir`, FHIR_TIMEOUT_MS: '1500' },
    });
  });

  afterAll(async () => {
    await gw.close();
    await smtp.close();
  });

  it('delivers a resent code within 5 s while the FHIR server hangs, and the AuditEvents once it is back', async () => {
    const pending = await gw.seedUser({
      role: 'patient',
      email: 'lane-pending@example.com',
      registered: false,
    });
    await gw.deps.db
      .updateTable('users')
      .set({ display_name: 'Lane Pending' })
      .where('id', '=', pending.id)
      .execute();
    const started = Date.now();
    const resend = await gw.call('/auth/access-code/resend', {
      method: 'POST',
      json: { email: pending.email },
    });
    expect(resend.status).toBe(202);
    const [mail] = await smtp.waitFor(1, 5_000);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(mail?.text).toContain('Lane Pending');

    // the AuditEvent mirror waits in its own lane
    const waiting = await gw.deps.db
      .selectFrom('outbox')
      .select(['status'])
      .where('kind', '=', 'fhir_audit_event')
      .execute();
    expect(waiting.length).toBeGreaterThan(0);
    expect(waiting.every((r) => r.status !== 'sent')).toBe(true);

    // the FHIR server comes back on the same address
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => hang.close(() => resolve()));
    const fhir = await startEmbeddedFhirServer({ dataDir: tempDir(), port, basePath: '/fhir' });
    try {
      const deadline = Date.now() + 30_000;
      let sent = 0;
      while (Date.now() < deadline) {
        gw.deps.outbox.wake();
        const rows = await gw.deps.db
          .selectFrom('outbox')
          .select('status')
          .where('kind', '=', 'fhir_audit_event')
          .execute();
        sent = rows.filter((r) => r.status === 'sent').length;
        if (sent === rows.length) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      expect(sent).toBeGreaterThanOrEqual(waiting.length);
      const events = (await (await fetch(`${fhir.baseUrl}/AuditEvent?_count=100`)).json()) as {
        total: number;
      };
      expect(events.total).toBeGreaterThanOrEqual(waiting.length);
    } finally {
      await fhir.close();
    }
  }, 60_000);

  it('takes over a mail whose worker died mid-delivery within the lease, not minutes later', async () => {
    const now = new Date();
    const code = 'ABCD-EFGH-JKMN-PQRS';
    const person = await gw.seedUser({ role: 'patient', registered: false });
    // a worker of another (now dead) process claimed it and never finished: queued and claimed in one commit
    await gw.deps.db.transaction().execute(async (trx) => {
      // the account holds the code's hash, as provisioning leaves it (the worker mails only a live code)
      await trx
        .updateTable('users')
        .set({ access_code_hash: hashAccessCode(gw.deps.secrets.codeHmacKey, 'signup', person.email, code) })
        .where('id', '=', person.id)
        .execute();
      const id = await enqueueAccessCodeMail(trx, gw.deps.clock, gw.deps.secrets.sealingKey, {
        template: 'access_code',
        to: person.email,
        name: 'Lane Crashed',
        role: 'patient',
        purpose: 'signup',
        code,
        expiresAt: new Date(now.getTime() + 3600_000).toISOString(),
      });
      // the row is due "now" by the gateway's clock, a moment after `now`: claim it a second later
      const due = new Date(Date.now() + 1_000).toISOString();
      const claimed = await claimOutboxRow(trx, id, due, new Date(now.getTime() + LEASE_MS).toISOString());
      expect(claimed?.status).toBe('sending');
    });
    const before = smtp.messages.length;
    const started = Date.now();
    const arrived = await smtp.waitFor(before + 1, LEASE_MS + 5_000);
    expect(Date.now() - started).toBeLessThan(LEASE_MS + 5_000);
    expect(JSON.stringify(arrived.at(-1)?.to)).toContain(person.email);
  }, 30_000);
});
