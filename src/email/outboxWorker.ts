import type { Kysely } from 'kysely';
import { isDatabaseWait } from '../../db/connection.js';
import type { Database, OutboxKind, OutboxRow, Role } from '../../db/schema.js';
import { type AuditEventLane, deliverAuditBatch, type LaneState } from '../audit/auditEventLane.js';
import { writeAudit } from '../audit/auditService.js';
import type { CodeState } from '../auth/accountCodes.js';
import type { Clock } from '../clock.js';
import { AppError } from '../errors.js';
import type { FhirService } from '../fhir/fhirService.js';
import { isStored } from '../fhir/upstreamStatus.js';
import { heartbeat, LEASE_MS } from '../leases.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics/metrics.js';
import { type SecretKey, unseal } from '../secrets.js';
import { FHIR_TYPE_BY_ROLE } from '../users/fhirIdentity.js';
import { findUserByEmail } from '../users/userRepository.js';
import { InvalidMailError, type Mailer } from './mailer.js';
import {
  claimOutboxRow,
  findDueOutboxIds,
  markOutboxFailed,
  markOutboxRetry,
  markOutboxSent,
  type OutboxClaim,
  type OutboxDb,
  type PurgedMailPayload,
  renewOutboxClaim,
  type SealedAccessCodePayload,
} from './outbox.js';
import {
  backoffMs,
  deferredRecipient,
  errorLabel,
  PermanentFailure,
  parsePayload,
  refusedForGood,
} from './outboxFailures.js';
import { renderAccessCodeMail } from './templates.js';

export interface OutboxWorkerDeps {
  db: Kysely<Database>;
  clock: Clock;
  mailer: Mailer;
  fhir: FhirService;
  /** Opens sealed codes: the current key, and the previous one after a rotation of APP_SECRET. */
  sealingKey: SecretKey;
  /** What became of a code since it was mailed (src/auth/accountCodes.ts codeStateOf): only a current one is sent. */
  codeState(purpose: 'signup' | 'password_reset', email: string, code: string): Promise<CodeState>;
  appName: string;
  signupUrl: string;
  /** Where a password reset is completed; without it reset mails carry no link. */
  resetUrl?: string;
  logger: Logger;
  /** Counts failed deliveries per lane (src/metrics/); absent in tests. */
  metrics?: Pick<Metrics, 'outboxFailure'>;
}

export interface OutboxWorkerOptions {
  /** Time between polls when idle. Default 2000 ms. */
  pollIntervalMs?: number;
  /** Poll from the start (default true); with false only runOnce() and wake() start ticks. */
  autoStart?: boolean;
  /** Which lane: only rows of this kind (mail, or the AuditEvent mirror). Default: every kind. */
  lane?: OutboxKind;
  /**
   * How long a claim lasts without renewal; a delivery in progress renews it (heartbeat), so a
   * crashed worker's rows are taken over within this time. Default LEASE_MS (6 s).
   */
  leaseMs?: number;
  /** Attempts after which a row is given up ('failed'). Default 20. */
  maxAttempts?: number;
  /** Rows claimed per tick. Default 10. */
  batchSize?: number;
}

export interface OutboxWorker {
  /** Runs one tick (after any running one) and resolves with the number of rows processed. */
  runOnce(): Promise<number>;
  /** Asks for a tick now, e.g. right after a commit that enqueued mail. */
  wake(): void;
  /** Stops the timer and waits for the running tick. */
  stop(): Promise<void>;
}

const DEFAULT_POLL_MS = 2_000;
/**
 * Attempts before a row is given up: a code mail is retried for longer than the longest code
 * lives (ACCESS_CODE_TTL, 24 h at most; the backoff stops growing at 1 h), so an outage ends it
 * as `code_expired`, never while its code still works (20 attempts gave up after ~10 h).
 */
export const DEFAULT_MAX_ATTEMPTS = 40;
const DEFAULT_BATCH_SIZE = 10;
const ROLES = new Set<Role>(['patient', 'practitioner', 'admin']);
/**
 * An access-code mail given up for good is audited (`mail.failed`, the account as its target), so
 * an admin finds in GET /admin/audit whom to send a new code — unless a newer code voided it.
 */
async function auditMailGivenUp(
  db: OutboxDb,
  clock: Clock,
  payload: Record<string, unknown>,
  reason: string,
): Promise<void> {
  if (reason === 'superseded' || typeof payload.to !== 'string') return;
  const user = await findUserByEmail(db, payload.to);
  await writeAudit(db, clock, {
    action: 'mail.failed',
    outcome: 'failed',
    targetUserId: user?.id ?? null,
    targetFhirType: user ? FHIR_TYPE_BY_ROLE[user.role] : null,
    targetFhirId: user?.fhir_resource_id ?? null,
    detail: { purpose: typeof payload.purpose === 'string' ? payload.purpose : 'unknown', reason },
  });
}

function purged(payload: Partial<SealedAccessCodePayload>): string {
  const out: PurgedMailPayload = {
    template: typeof payload.template === 'string' ? payload.template : 'unknown',
    to: typeof payload.to === 'string' ? payload.to : '',
    purpose: typeof payload.purpose === 'string' ? payload.purpose : 'unknown',
    purged: true,
  };
  return JSON.stringify(out);
}

/**
 * Renders and sends one access-code mail. Failures no retry can fix (an expired, voided or
 * unreadable code, an address refused for good) throw PermanentFailure.
 */
async function sendAccessCodeMail(deps: OutboxWorkerDeps, payload: Record<string, unknown>): Promise<void> {
  const p = payload as Partial<SealedAccessCodePayload>;
  if (
    p.template !== 'access_code' ||
    typeof p.code_sealed !== 'string' ||
    typeof p.to !== 'string' ||
    !ROLES.has(p.role as Role)
  ) {
    throw new PermanentFailure('invalid_payload');
  }
  const expiresAt = new Date(p.expiresAt ?? Number.NaN);
  if (Number.isNaN(expiresAt.getTime())) throw new PermanentFailure('invalid_payload');
  const now = deps.clock.now();
  // an expired code is useless to its reader; the person can ask for a fresh one
  if (expiresAt.getTime() <= now.getTime()) throw new PermanentFailure('code_expired');
  let code: string;
  try {
    code = unseal(deps.sealingKey, p.code_sealed);
  } catch {
    // sealed under another key (APP_SECRET changed): no retry will open it
    throw new PermanentFailure('unseal_failed');
  }
  const purpose = p.purpose === 'password_reset' ? 'password_reset' : 'signup';
  // a newer code replaced this one (a re-issue or resend) while its mail waited for a retry, or
  // wrong tries voided it: `superseded` is dropped quietly, `voided` given up and audited
  const state = await deps.codeState(purpose, p.to, code);
  if (state !== 'current') throw new PermanentFailure(state);
  const mail = renderAccessCodeMail({
    name: typeof p.name === 'string' ? p.name : '',
    role: p.role as Role,
    code,
    expiresAt,
    now,
    appName: deps.appName,
    signupUrl: deps.signupUrl,
    email: p.to,
    purpose,
    ...(deps.resetUrl ? { resetUrl: deps.resetUrl } : {}),
  });
  try {
    await deps.mailer.send({ to: p.to, ...mail });
  } catch (error) {
    if (error instanceof InvalidMailError) throw new PermanentFailure('invalid_address');
    const refused = refusedForGood(error);
    if (refused) throw new PermanentFailure(refused);
    throw error;
  }
}

/**
 * Delivers the outbox, one lane per worker (mail, or the AuditEvent mirror: a hanging FHIR
 * server never delays a mail, a failing SMTP server never delays an AuditEvent): claims due
 * rows one conditional UPDATE at a time (so two workers or two instances never send the same
 * row), sends while renewing the claim's short lease, then marks them sent or schedules a retry
 * with exponential backoff. Delivery is at least once: a crash between the SMTP server's
 * accept and the 'sent' update sends that mail again once the lease lapses (within LEASE_MS);
 * a 'sent' update the database refused is only tried again by the worker that sent it.
 */
export function startOutboxWorker(deps: OutboxWorkerDeps, options: OutboxWorkerOptions = {}): OutboxWorker {
  const leaseMs = options.leaseMs ?? LEASE_MS;
  const lane = options.lane;
  const state: LaneState = { restingUntil: 0, batchesRefused: false };
  const maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  const { db, clock, logger } = deps;

  const auditLane: AuditEventLane = { deps, leaseMs, maxAttempts, state };
  // rows delivered whose 'sent' mark the database refused (busy, away): when the lapsed lease
  // brings one back, it is marked, not sent again (review S2: the same mail went out twice)
  const deliveredUnmarked = new Set<string>();

  // any 2xx is delivery: a create's checks of its answer (the record, or a Location on the base)
  // failed a 201 the server had stored, and each retry stored the event again. A 304 is no 2xx:
  // nothing was stored (a cache in front of the server)
  const postAuditEvent = async (payload: Record<string, unknown>) => {
    const result = await deps.fhir.forward({ method: 'POST', path: 'AuditEvent', body: payload });
    if (!isStored(result.status))
      throw new AppError('upstream_error', { cause: new Error(`AuditEvent answered ${result.status}`) });
  };

  /** Delivers a claimed row, renewing its lease while the send runs; false when it failed and will be retried. */
  const deliver = async (row: OutboxRow): Promise<boolean> => {
    const claim: OutboxClaim = { id: row.id, attempts: row.attempts };
    const beat = heartbeat(
      () => renewOutboxClaim(db, claim, new Date(clock.now().getTime() + leaseMs).toISOString()),
      logger,
      Math.max(50, Math.floor(leaseMs / 3)),
    );
    try {
      return await deliverClaimed(row, claim);
    } finally {
      await beat.stop();
    }
  };

  const deliverClaimed = async (row: OutboxRow, claim: OutboxClaim): Promise<boolean> => {
    const log = { outbox_id: row.id, kind: row.kind, attempts: row.attempts };
    let payload: Record<string, unknown> = {};
    const finalPayload = () => (row.kind === 'email' ? purged(payload) : undefined);
    const lost = () => logger.warn(log, 'outbox row was taken over by another worker before it was marked');
    try {
      payload = parsePayload(row);
      if (!deliveredUnmarked.has(row.id)) {
        // a row claimed again and again without finishing (a worker dying on it) is given up too
        if (row.attempts > maxAttempts) throw new PermanentFailure('too_many_attempts');
        if (row.kind === 'email') await sendAccessCodeMail(deps, payload);
        else await postAuditEvent(payload);
      }
    } catch (error) {
      const label = error instanceof PermanentFailure ? error.label : errorLabel(error);
      if (error instanceof PermanentFailure || row.attempts >= maxAttempts) {
        const ok = await db.transaction().execute(async (trx) => {
          const marked = await markOutboxFailed(trx, claim, label, finalPayload());
          if (marked && row.kind === 'email') await auditMailGivenUp(trx, clock, payload, label);
          return marked;
        });
        // a mail whose code was replaced is dropped on purpose (the new code's mail goes out): no failure
        const dropped = label === 'superseded';
        if (ok && dropped) logger.info(log, 'outbox row dropped: a newer code replaced its code');
        else if (ok) logger.warn({ ...log, error: label }, 'outbox row failed for good');
        else lost();
        if (ok && !dropped) deps.metrics?.outboxFailure(row.kind, 'failed');
        return true;
      }
      const delay = backoffMs(row.attempts);
      const next = new Date(clock.now().getTime() + delay).toISOString();
      const ok = await markOutboxRetry(db, claim, next, label);
      if (ok)
        logger.warn({ ...log, error: label, next_attempt_at: next }, 'outbox delivery failed, will retry');
      else lost();
      if (ok) deps.metrics?.outboxFailure(row.kind, 'retry');
      if (lane && !deferredRecipient(error)) state.restingUntil = clock.now().getTime() + delay;
      return false;
    }
    // purge: once the mail is out, the row keeps no code, sealed or not
    let ok: boolean;
    try {
      ok = await markOutboxSent(db, claim, clock.now().toISOString(), finalPayload());
    } catch (error) {
      deliveredUnmarked.add(row.id);
      throw error;
    }
    deliveredUnmarked.delete(row.id);
    if (ok) logger.debug(log, 'outbox row delivered');
    else lost();
    return true;
  };

  const tick = async (): Promise<number> => {
    const now = clock.now();
    // a lane whose server just failed rests: trying the next row would only wait for the same timeout
    if (now.getTime() < state.restingUntil) return 0;
    const nowIso = now.toISOString();
    const leaseUntil = new Date(now.getTime() + leaseMs).toISOString();
    const ids = await findDueOutboxIds(db, nowIso, batchSize, lane);
    if (lane === 'fhir_audit_event' && !state.batchesRefused && ids.length > 1) {
      // every claim of the batch in one commit
      const rows = await db.transaction().execute(async (trx) => {
        const claimed: OutboxRow[] = [];
        for (const id of ids) {
          const row = await claimOutboxRow(trx, id, nowIso, leaseUntil);
          if (row) claimed.push(row);
        }
        return claimed;
      });
      if ((await deliverAuditBatch(auditLane, rows)) !== undefined) return rows.length;
      for (const row of rows) if (!(await deliver(row))) break;
      return rows.length;
    }
    let processed = 0;
    for (const id of ids) {
      const row = await claimOutboxRow(db, id, nowIso, leaseUntil);
      if (!row) continue; // another worker claimed it first
      processed += 1;
      if (!(await deliver(row)) && lane) break;
    }
    return processed;
  };

  return pollTicks(tick, {
    pollIntervalMs: options.pollIntervalMs ?? DEFAULT_POLL_MS,
    autoStart: options.autoStart ?? true,
    batchSize,
    lane: lane ?? 'all',
    logger,
  });
}

/**
 * Runs `tick` again and again, one at a time: every `pollIntervalMs` when polling, at once after
 * a full batch (there is probably more) or a wake(). A tick that fails is logged, and the next
 * one comes as usual; a database outage is one warning when it starts and one line when it ends.
 */
function pollTicks(
  tick: () => Promise<number>,
  options: { pollIntervalMs: number; autoStart: boolean; batchSize: number; lane: string; logger: Logger },
): OutboxWorker {
  // every tick is chained on the previous one: ticks never overlap
  let chain: Promise<unknown> = Promise.resolve();
  const runOnce = (): Promise<number> => {
    const next = chain.then(tick);
    chain = next.catch(() => undefined);
    return next;
  };

  // without autoStart there is no polling: only runOnce() and wake() start ticks
  const polling = options.autoStart;
  let stopped = false;
  let looping = false;
  let wakeAgain = false;
  let timer: NodeJS.Timeout | undefined;
  let waitingForDatabase = false;

  // an outage or a held lock is the database's state, not a bug: one warning when it starts, not one per tick
  const logTickFailure = (error: unknown) => {
    if (!isDatabaseWait(error)) {
      options.logger.error({ error: errorLabel(error) }, 'outbox tick failed');
      return;
    }
    if (!waitingForDatabase)
      options.logger.warn({ lane: options.lane, error: errorLabel(error) }, 'outbox waits for the database');
    waitingForDatabase = true;
  };

  const schedule = (delayMs: number) => {
    if (stopped) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(loop, delayMs);
    // the worker alone never keeps the process alive
    timer.unref();
  };

  const loop = async () => {
    timer = undefined;
    if (stopped) return;
    looping = true;
    let processed = 0;
    try {
      processed = await runOnce();
      if (waitingForDatabase)
        options.logger.info({ lane: options.lane }, 'outbox: the database answers again');
      waitingForDatabase = false;
    } catch (error) {
      logTickFailure(error);
    } finally {
      looping = false;
    }
    // a full batch means there is probably more: go again without waiting
    const again = wakeAgain || processed >= options.batchSize;
    wakeAgain = false;
    if (again) schedule(0);
    else if (polling) schedule(options.pollIntervalMs);
  };

  if (polling) schedule(0);

  return {
    runOnce,
    wake: () => {
      if (stopped) return;
      if (looping) wakeAgain = true;
      else schedule(0);
    },
    stop: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      await chain;
    },
  };
}
