import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { generateAccessCode } from '../../src/auth/accessCodes.js';
import { InvalidMailError } from '../../src/email/mailer.js';
import {
  type AccessCodeMailJob,
  claimOutboxRow,
  enqueueAccessCodeMail,
  enqueueFhirAuditEvent,
  findOutboxRow,
  markOutboxFailed,
  markOutboxRetry,
  markOutboxSent,
  type SealedAccessCodePayload,
} from '../../src/email/outbox.js';
import { unseal } from '../../src/secrets.js';
import { ManualClock } from '../helpers/clock.js';
import { DIALECTS } from '../helpers/postgres.js';
import { codeForms, type EmailTestDb, INJECTED_RECIPIENTS, openEmailTestDb } from './fixtures.js';

const sealingKey = randomBytes(32);

describe.each(DIALECTS)('outbox enqueue on %s', (dialect) => {
  let t: EmailTestDb | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  const job = (overrides: Partial<AccessCodeMailJob> = {}): AccessCodeMailJob => ({
    template: 'access_code',
    to: 'pat@example.com',
    name: 'Pat Example',
    role: 'patient',
    purpose: 'signup',
    code: generateAccessCode(),
    expiresAt: new Date(Date.now() + 86_400_000).toISOString(),
    ...overrides,
  });

  it('stores an access-code mail as a due pending row whose code is sealed, never plain', async () => {
    t = await openEmailTestDb(dialect);
    const clock = new ManualClock(new Date('2026-11-24T14:03:00Z'));
    const j = job();
    const id = await enqueueAccessCodeMail(t.db, clock, sealingKey, j);
    const [row] = await t.outboxRows();
    expect(row).toMatchObject({
      id,
      kind: 'email',
      status: 'pending',
      attempts: 0,
      next_attempt_at: '2026-11-24T14:03:00.000Z',
      created_at: '2026-11-24T14:03:00.000Z',
      locked_until: null,
      sent_at: null,
    });
    for (const form of codeForms(j.code)) expect(row?.payload).not.toContain(form);
    const payload = JSON.parse(row?.payload ?? '{}') as SealedAccessCodePayload;
    expect(payload).not.toHaveProperty('code');
    expect(unseal(sealingKey, payload.code_sealed)).toBe(j.code);
    expect(payload).toMatchObject({ template: 'access_code', to: 'pat@example.com', role: 'patient' });
  });

  it('rolls back with the caller transaction it was enqueued in', async () => {
    t = await openEmailTestDb(dialect);
    const clock = new ManualClock();
    const db = t.db;
    await expect(
      db.transaction().execute(async (trx) => {
        await enqueueAccessCodeMail(trx, clock, sealingKey, job());
        throw new Error('provisioning failed after enqueue');
      }),
    ).rejects.toThrow('provisioning failed');
    expect(await t.outboxRows()).toHaveLength(0);
    await db.transaction().execute((trx) => enqueueAccessCodeMail(trx, clock, sealingKey, job()));
    expect(await t.outboxRows()).toHaveLength(1);
  });

  it('refuses a recipient with CRLF, a second address or a display name, and stores nothing', async () => {
    t = await openEmailTestDb(dialect);
    const clock = new ManualClock();
    for (const bad of INJECTED_RECIPIENTS) {
      await expect(
        enqueueAccessCodeMail(t.db, clock, sealingKey, job({ to: bad })),
        JSON.stringify(bad),
      ).rejects.toBeInstanceOf(InvalidMailError);
    }
    expect(await t.outboxRows()).toHaveLength(0);
  });

  it('lets only one of two racing claims win, and a claim that lost its lease cannot overwrite the new owner', async () => {
    t = await openEmailTestDb(dialect);
    const clock = new ManualClock(new Date('2026-11-24T14:03:00Z'));
    const id = await enqueueAccessCodeMail(t.db, clock, sealingKey, job());
    const now = clock.now().toISOString();
    const lease = new Date(clock.now().getTime() + 60_000).toISOString();
    const [a, b] = await Promise.all([
      claimOutboxRow(t.db, id, now, lease),
      claimOutboxRow(t.openAnother().db, id, now, lease),
    ]);
    expect([a, b].filter(Boolean)).toHaveLength(1);
    const first = (a ?? b)!;
    expect(first).toMatchObject({ status: 'sending', attempts: 1, locked_until: lease });

    // the first worker stalls past its lease; a second one takes the row over and delivers it
    clock.advance(60_001);
    const later = clock.now().toISOString();
    const second = await claimOutboxRow(
      t.db,
      id,
      later,
      new Date(clock.now().getTime() + 60_000).toISOString(),
    );
    expect(second?.attempts).toBe(2);
    // the stalled worker wakes up while the new owner is still sending: its stale claim changes nothing
    expect(await markOutboxRetry(t.db, first, later, 'ETIMEDOUT')).toBe(false);
    expect(await markOutboxFailed(t.db, first, 'ETIMEDOUT')).toBe(false);
    expect(await markOutboxSent(t.db, first, later)).toBe(false);
    expect(await findOutboxRow(t.db, id)).toMatchObject({ status: 'sending', attempts: 2, last_error: null });
    expect(await markOutboxSent(t.db, second!, later, '{"purged":true}')).toBe(true);
    expect(await findOutboxRow(t.db, id)).toMatchObject({
      status: 'sent',
      attempts: 2,
      payload: '{"purged":true}',
    });
  });

  it('stores a FHIR AuditEvent as a pending fhir_audit_event row and refuses other resource types', async () => {
    t = await openEmailTestDb(dialect);
    const clock = new ManualClock();
    const event = { resourceType: 'AuditEvent', action: 'C', recorded: clock.now().toISOString() };
    const id = await enqueueFhirAuditEvent(t.db, clock, event);
    const [row] = await t.outboxRows();
    expect(row).toMatchObject({ id, kind: 'fhir_audit_event', status: 'pending' });
    expect(JSON.parse(row?.payload ?? '')).toEqual(event);
    await expect(enqueueFhirAuditEvent(t.db, clock, { resourceType: 'Patient' })).rejects.toThrow(
      'AuditEvent',
    );
  });
});
