import type { Resource } from '@medplum/fhirtypes';
import type { IntentRow } from '../../db/schema.js';
import { writeAudit } from '../audit/auditService.js';
import { fulfilLapsedCodeRequests } from '../auth/codeRequests.js';
import { AppError } from '../errors.js';
import { versionIdOf } from '../fhir/fhirService.js';
import type { AppDeps } from '../http/types.js';
import { heartbeat, isoAfter, LEASE_MS } from '../leases.js';
import type { Logger } from '../logger.js';
import { ROLE_BY_FHIR_TYPE } from '../users/fhirIdentity.js';
import { findUserByEmail, findUserByFhirResource } from '../users/userRepository.js';
import { finishKey, keyOfIntent, releaseKey } from './idempotency.js';
import {
  claimIntent,
  claimLateLook,
  endLateLook,
  findIntent,
  type IntentClaim,
  LATE_LOOK,
  lapsedIntentIds,
  lateLookIds,
  postponeIntent,
  renewIntent,
  settleIntent,
} from './intents.js';
import {
  completeAccount,
  type ProvisionedResource,
  provisionedResponse,
  recordOrphan,
  removeFromFhir,
  sentAccountIdentifierSystem,
} from './provisioningService.js';

/**
 * Reconciliation of provisioning creates that no request finished: the request crashed (the
 * process was killed), or it ended while the FHIR server's answer was unknown. Each pending
 * intent whose lease lapsed is claimed and settled by what the FHIR server holds under the
 * account identifier:
 * - nothing: nothing was created; the intent is abandoned and its idempotency key freed, so a
 *   retry with the key does the work;
 * - one resource and no account: the account is completed (user, code, mail) as the request
 *   would have, and the key answers with it;
 * - one resource whose email another account took meanwhile: the resource is removed;
 * - several: they are listed as orphans (an operator must merge them).
 * Runs at start-up, every RECONCILE_EVERY_MS, and on demand when a retry meets a lapsed key.
 * Anything it cannot repair is listed at GET /admin/provisioning/orphans, never silently.
 */

export type Settlement = 'done' | 'abandoned' | 'orphaned' | 'held';

const RECONCILE_EVERY_MS = 10_000;
/** After a failed attempt (FHIR server down) an intent is looked at again this much later. */
const RETRY_AFTER_FAILURE_MS = 15_000;
const BATCH = 20;
/** How long after "nothing was created" (past the FHIR timeout) reconciliation looks once more. */
export const LATE_LOOK_AFTER_MS = 120_000;

function intentAudit(deps: AppDeps, intent: IntentRow) {
  return (event: Parameters<typeof writeAudit>[2], db = deps.db) =>
    writeAudit(db, deps.clock, {
      ...event,
      actorUserId: intent.actor_user_id,
      actorRole: 'admin',
      requestId: intent.request_id,
      clientIp: intent.client_ip,
    });
}

/** The resources the FHIR server holds under the account identifier the intent's create sent (checked again here). */
async function accountResources(deps: AppDeps, intent: IntentRow): Promise<ProvisionedResource[]> {
  const sent = JSON.parse(intent.resource) as ProvisionedResource;
  const system = sentAccountIdentifierSystem(sent, intent.email, deps.config.publicBaseUrl);
  const value = intent.email;
  const query = new URLSearchParams({ identifier: `${system}|${value}` });
  const bundle = (await deps.fhir.search(intent.fhir_type, query)).body;
  return (bundle?.entry ?? []).flatMap((e) => {
    const r = e.resource as Resource | undefined;
    // the server's answer as it came: an identifier that is not a list of objects carries nothing (never a TypeError)
    const identifiers: unknown = (r as ProvisionedResource | undefined)?.identifier;
    const carries =
      Array.isArray(identifiers) && identifiers.some((i) => i?.system === system && i?.value === value);
    return r?.resourceType === intent.fhir_type && r.id && carries ? [r as ProvisionedResource] : [];
  });
}

async function settle(
  deps: AppDeps,
  intent: IntentRow,
  claim: IntentClaim,
  state: 'abandoned' | 'orphaned',
  reason: string,
  lateLookAt?: string,
) {
  const held = keyOfIntent(intent);
  // one commit: a crash between the two left the key in progress behind a settled intent
  await deps.db.transaction().execute(async (trx) => {
    const settled = await settleIntent(trx, claim, state, {
      last_error: reason,
      ...(lateLookAt ? { lease_until: lateLookAt } : {}),
      updated_at: deps.clock.now().toISOString(),
    });
    if (settled && held) await releaseKey(trx, held, intent.id);
  });
}

/**
 * An intent we could not claim: held by a live request or another instance ('held'), or settled
 * already. A key still linked to a settled intent that created nothing is freed here, so a retry
 * can do the work: such a key was left by a crash between settling and freeing it (before both
 * shared a commit), and would otherwise answer 409 to every retry.
 */
async function unclaimed(deps: AppDeps, intentId: string): Promise<Settlement> {
  const intent = await findIntent(deps.db, intentId);
  if (!intent || intent.state === 'pending') return 'held';
  const held = keyOfIntent(intent);
  if (held && intent.state !== 'done') await releaseKey(deps.db, held, intent.id);
  return intent.state;
}

type IntentAudit = ReturnType<typeof intentAudit>;

/** The audit entry of a reconciliation that settled an intent, by its result. */
function reconciled(
  intent: IntentRow,
  audit: IntentAudit,
  result: string,
  outcome: 'success' | 'failed' = 'success',
  db?: Parameters<IntentAudit>[1],
) {
  return audit(
    { action: 'provisioning.reconcile', outcome, targetFhirType: intent.fhir_type, detail: { result } },
    db,
  );
}

/**
 * Nothing landed: the key is freed at once (a retry may go now), and one more look is due later: a
 * slow server may still commit the create it took before our request gave up.
 */
async function settleNothingCreated(
  deps: AppDeps,
  intent: IntentRow,
  claim: IntentClaim,
): Promise<Settlement> {
  const lateLookAt = isoAfter(deps.clock.now(), deps.config.fhir.timeoutMs + LATE_LOOK_AFTER_MS);
  await settle(deps, intent, claim, 'abandoned', LATE_LOOK.due, lateLookAt);
  await reconciled(intent, intentAudit(deps, intent), 'nothing_created');
  return 'abandoned';
}

/**
 * Several records carry the account identifier. When an account of this email links one of them
 * (its create won a race on a server whose conditional create is not atomic), the others are this
 * intent's strays and go, as a lone one does (email_taken): listing the linked record too had an
 * operator told to merge them, who might delete the live one. Otherwise none is picked on a
 * guess: all are listed for an operator.
 */
async function settleDuplicates(
  deps: AppDeps,
  intent: IntentRow,
  claim: IntentClaim,
  found: readonly ProvisionedResource[],
): Promise<Settlement> {
  const owner = await findUserByEmail(deps.db, intent.email);
  const linked = found.find((r) => r.id === owner?.fhir_resource_id);
  if (linked) {
    const audit = intentAudit(deps, intent);
    let orphaned = false;
    for (const r of found) {
      if (r === linked) continue;
      const outcome = await removeFromFhir(
        deps,
        intent.fhir_type,
        r.id as string,
        audit,
        'email_taken',
        intent.request_id,
      );
      orphaned ||= outcome === 'orphaned';
    }
    const state = orphaned ? 'orphaned' : 'abandoned';
    await settle(deps, intent, claim, state, 'email_taken');
    return state;
  }
  for (const r of found)
    await recordOrphan(deps, intent.fhir_type, r.id as string, 'duplicate_identifier', intent.request_id);
  await settle(deps, intent, claim, 'orphaned', 'duplicate_identifier');
  await reconciled(intent, intentAudit(deps, intent), 'duplicates', 'failed');
  return 'orphaned';
}

/** Another request (a retry without the key) finished this account already: the intent and its key take its answer. */
async function settleAlreadyComplete(
  deps: AppDeps,
  intent: IntentRow,
  claim: IntentClaim,
  resource: ProvisionedResource,
  ownerId: string,
): Promise<Settlement> {
  const id = resource.id as string;
  const held = keyOfIntent(intent);
  await deps.db.transaction().execute(async (trx) => {
    const now = deps.clock.now().toISOString();
    if (!(await settleIntent(trx, claim, 'done', { fhir_id: id, user_id: ownerId, updated_at: now }))) return;
    const response = provisionedResponse(deps, intent.response_kind, {
      type: intent.fhir_type,
      userId: ownerId,
      fhirId: id,
      resource,
      versionId: versionIdOf(resource),
      email: intent.email,
    });
    if (held) await finishKey(trx, held, response);
  });
  await reconciled(intent, intentAudit(deps, intent), 'already_complete');
  return 'done';
}

/** Settles one claimed intent by what the FHIR server holds; throws when the FHIR server cannot tell (it is retried later). */
async function settleClaimed(deps: AppDeps, intent: IntentRow, claim: IntentClaim): Promise<Settlement> {
  const found = await accountResources(deps, intent);
  if (found.length === 0) return settleNothingCreated(deps, intent, claim);
  if (found.length > 1) return settleDuplicates(deps, intent, claim, found);
  const resource = found[0] as ProvisionedResource;
  const id = resource.id as string;
  const owner = await findUserByEmail(deps.db, intent.email);
  if (owner?.fhir_resource_id === id) return settleAlreadyComplete(deps, intent, claim, resource, owner.id);
  const audit = intentAudit(deps, intent);
  const removeAndSettle = async (reason: 'email_taken' | 'fhir_id_reused'): Promise<Settlement> => {
    const outcome = await removeFromFhir(deps, intent.fhir_type, id, audit, reason, intent.request_id);
    const state = outcome === 'removed' ? 'abandoned' : 'orphaned';
    await settle(deps, intent, claim, state, reason);
    return state;
  };
  if (owner) return removeAndSettle('email_taken');
  // another email's account links this id: the FHIR server gave it again (ids reused after a reset
  // or a restore); the record is this intent's (our identifier on it) and goes, as a request does
  if (await findUserByFhirResource(deps.db, ROLE_BY_FHIR_TYPE[intent.fhir_type], id)) {
    deps.logger.error(
      { fhir_type: intent.fhir_type, fhir_id: id, intent_id: intent.id },
      'the FHIR server gave a new record the id another account links to: were its ids reused?',
    );
    return removeAndSettle('fhir_id_reused');
  }
  const created = { resource, id, versionId: versionIdOf(resource), createdNow: false };
  await completeAccount(deps, intent, claim, created, audit, { reconciled: true });
  await reconciled(intent, audit, 'completed');
  return 'done';
}

/**
 * Claims and settles one intent if its lease lapsed; 'held' when someone else holds it (its
 * request is alive, or another instance reconciles it); the state it has when it was settled already. Throws when the FHIR server cannot
 * tell what exists (the intent is postponed and looked at again later).
 */
export async function reconcileIntent(deps: AppDeps, intentId: string): Promise<Settlement> {
  const now = deps.clock.now();
  const intent = await claimIntent(deps.db, intentId, now.toISOString(), isoAfter(now, LEASE_MS));
  if (!intent) return unclaimed(deps, intentId);
  const claim: IntentClaim = { id: intent.id, attempts: intent.attempts };
  const beat = heartbeat(
    () => renewIntent(deps.backgroundDb, claim, isoAfter(deps.clock.now(), LEASE_MS)),
    deps.logger,
  );
  try {
    return await settleClaimed(deps, intent, claim);
  } catch (error) {
    const label = error instanceof AppError ? error.code : 'unexpected';
    await postponeIntent(deps.db, claim, isoAfter(deps.clock.now(), RETRY_AFTER_FAILURE_MS), label).catch(
      () => undefined,
    );
    throw error;
  } finally {
    await beat.stop();
  }
}

/** Every lapsed intent, now: at start-up and on a timer. */
export async function reconcileLapsed(deps: AppDeps, logger: Logger): Promise<Record<Settlement, number>> {
  const counts: Record<Settlement, number> = { done: 0, abandoned: 0, orphaned: 0, held: 0 };
  const ids = await lapsedIntentIds(deps.db, deps.clock.now().toISOString(), BATCH);
  for (const id of ids) {
    try {
      counts[await reconcileIntent(deps, id)]++;
    } catch (error) {
      logger.warn(
        { intent_id: id, code: error instanceof AppError ? error.code : 'unexpected' },
        'reconciliation postponed',
      );
    }
  }
  // an intent still held by its live request is not news: only settled ones are logged
  if (counts.done + counts.abandoned + counts.orphaned > 0)
    logger.info({ ...counts }, 'provisioning reconciled');
  return counts;
}

/**
 * The second look at an intent settled "nothing created": a resource that landed since and that no
 * account links to is listed as an orphan (`late_create`), never left unlisted; an admin's next
 * create for that email links it (the create is conditional on the account identifier) and
 * resolves the listing. Put off while another create of the same email is under way, whose
 * resource is not linked yet. Returns what the look found, or undefined when it was not ours.
 */
export async function lookLate(
  deps: AppDeps,
  intentId: string,
): Promise<'confirmed' | 'landed' | 'put_off' | undefined> {
  const now = deps.clock.now();
  const intent = await claimLateLook(deps.db, intentId, now.toISOString(), isoAfter(now, LEASE_MS));
  if (!intent) return undefined;
  const later = (last_error: string, ms: number) =>
    endLateLook(deps.db, intent.id, {
      last_error,
      lease_until: isoAfter(deps.clock.now(), ms),
      updated_at: deps.clock.now().toISOString(),
    });
  let found: ProvisionedResource[];
  try {
    found = await accountResources(deps, intent);
  } catch (error) {
    await later(LATE_LOOK.due, RETRY_AFTER_FAILURE_MS);
    throw error;
  }
  if (await hasPendingIntent(deps, intent.email)) {
    await later(LATE_LOOK.due, RECONCILE_EVERY_MS);
    return 'put_off';
  }
  const owner = await findUserByEmail(deps.db, intent.email);
  const unlinked = found.filter((r) => r.id !== owner?.fhir_resource_id);
  const updated_at = deps.clock.now().toISOString();
  if (unlinked.length === 0) {
    await endLateLook(deps.db, intent.id, { last_error: LATE_LOOK.confirmed, updated_at });
    return 'confirmed';
  }
  // one commit: a crash in between would list the orphans again at the next look
  await deps.db.transaction().execute(async (trx) => {
    for (const r of unlinked)
      await recordOrphan(
        deps,
        intent.fhir_type,
        r.id as string,
        LATE_LOOK.landedLate,
        intent.request_id,
        trx,
      );
    await endLateLook(trx, intent.id, { last_error: LATE_LOOK.landedLate, state: 'orphaned', updated_at });
    await reconciled(intent, intentAudit(deps, intent), 'late_create', 'failed', trx);
  });
  return 'landed';
}

async function hasPendingIntent(deps: AppDeps, email: string): Promise<boolean> {
  const row = await deps.db
    .selectFrom('provisioning_intents')
    .select('id')
    .where('email', '=', email)
    .where('state', '=', 'pending')
    .executeTakeFirst();
  return row !== undefined;
}

/** Every late look that is due, now. */
async function lookLateAtAbandoned(
  deps: AppDeps,
  logger: Logger,
): Promise<Record<'confirmed' | 'landed' | 'put_off', number>> {
  const counts = { confirmed: 0, landed: 0, put_off: 0 };
  for (const id of await lateLookIds(deps.db, deps.clock.now().toISOString(), BATCH)) {
    try {
      const result = await lookLate(deps, id);
      if (result) counts[result]++;
    } catch (error) {
      logger.warn(
        { intent_id: id, code: error instanceof AppError ? error.code : 'unexpected' },
        'late look postponed',
      );
    }
  }
  if (counts.landed > 0)
    logger.warn({ ...counts }, 'provisioning: creates landed after reconciliation looked; listed as orphans');
  return counts;
}

/** Reconciles at once, then every RECONCILE_EVERY_MS; returns the stop function. */
export function startReconciler(deps: AppDeps): () => Promise<void> {
  let running: Promise<unknown> | undefined;
  const run = () => {
    running ??= reconcileLapsed(deps, deps.logger)
      .then(() => lookLateAtAbandoned(deps, deps.logger))
      // a code mail accepted with a 202 and left unqueued (a crash, a failed try) is half-done work too
      .then(() => fulfilLapsedCodeRequests(deps))
      .catch((error: unknown) => deps.logger.warn({ err: error }, 'reconciliation failed'))
      .finally(() => {
        running = undefined;
      });
  };
  run();
  const timer = setInterval(run, RECONCILE_EVERY_MS);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}
