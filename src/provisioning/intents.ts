import type { Kysely, Transaction } from 'kysely';
import { afterPendingCommits, type Dialect } from '../../db/connection.js';
import type { Database, IntentRow, IntentState } from '../../db/schema.js';

/**
 * Provisioning intents: a create is recorded here before the FHIR call, so a crash between the
 * FHIR create and the user row is always found (reconciliation.ts). Rows in, rows out; the
 * `attempts` counter is the fencing token of whoever holds the row (the request that created
 * it, or the reconciler that took over its lapsed lease).
 */

type Db = Kysely<Database> | Transaction<Database>;

export type NewIntent = Omit<IntentRow, 'attempts' | 'state' | 'fhir_id' | 'user_id' | 'last_error'>;

/** The claim on an intent: its id and the attempts value the claim set. */
export interface IntentClaim {
  readonly id: string;
  readonly attempts: number;
}

/** Records a pending intent (held by its creator: attempts 1) and links the idempotency key to it. */
export async function insertIntent(db: Kysely<Database>, intent: NewIntent): Promise<IntentClaim> {
  await db.transaction().execute(async (trx) => {
    await trx
      .insertInto('provisioning_intents')
      .values({ ...intent, state: 'pending', attempts: 1, fhir_id: null, user_id: null, last_error: null })
      .execute();
    if (intent.idempotency_key !== null) {
      await trx
        .updateTable('idempotency_keys')
        .set({ intent_id: intent.id })
        .where('actor_user_id', '=', intent.actor_user_id)
        .where('key', '=', intent.idempotency_key)
        .execute();
    }
  });
  return { id: intent.id, attempts: 1 };
}

/** Takes over a pending intent whose lease lapsed; undefined when another holder has it. */
export async function claimIntent(db: Db, id: string, nowIso: string, leaseUntilIso: string) {
  return db
    .updateTable('provisioning_intents')
    .set((eb) => ({ attempts: eb('attempts', '+', 1), lease_until: leaseUntilIso, updated_at: nowIso }))
    .where('id', '=', id)
    .where('state', '=', 'pending')
    .where('lease_until', '<', nowIso)
    .returningAll()
    .executeTakeFirst();
}

/** Extends the lease while the claim is still ours. */
export async function renewIntent(db: Db, claim: IntentClaim, leaseUntilIso: string): Promise<boolean> {
  const result = await db
    .updateTable('provisioning_intents')
    .set({ lease_until: leaseUntilIso })
    .where('id', '=', claim.id)
    .where('state', '=', 'pending')
    .where('attempts', '=', claim.attempts)
    .executeTakeFirst();
  return result.numUpdatedRows === 1n;
}

/** Ends an intent while the claim is still ours; false means it was taken over (the caller rolls back). */
export async function settleIntent(
  db: Db,
  claim: IntentClaim,
  state: Exclude<IntentState, 'pending'>,
  values: {
    fhir_id?: string | null;
    user_id?: string | null;
    last_error?: string | null;
    /** For an intent settled `not_created`: when to look once more for a create that landed late. */
    lease_until?: string;
    updated_at: string;
  },
): Promise<boolean> {
  const result = await db
    .updateTable('provisioning_intents')
    .set({ state, ...values })
    .where('id', '=', claim.id)
    .where('state', '=', 'pending')
    .where('attempts', '=', claim.attempts)
    .executeTakeFirst();
  return result.numUpdatedRows === 1n;
}

/** Gives the lease up early (e.g. the FHIR server is down): reconciliation tries again at `retryAtIso`. */
export async function postponeIntent(db: Db, claim: IntentClaim, retryAtIso: string, lastError: string) {
  await db
    .updateTable('provisioning_intents')
    .set({ lease_until: retryAtIso, last_error: lastError })
    .where('id', '=', claim.id)
    .where('state', '=', 'pending')
    .where('attempts', '=', claim.attempts)
    .execute();
}

/** Whether another create of `email` is still open (its request running, or reconciliation's to finish). */
export async function anotherOpenIntent(db: Db, email: string, ownId: string): Promise<boolean> {
  const row = await db
    .selectFrom('provisioning_intents')
    .select('id')
    .where('state', '=', 'pending')
    .where('email', '=', email)
    .where('id', '!=', ownId)
    .executeTakeFirst();
  return row !== undefined;
}

/** Pending intents nobody holds: their request crashed or gave up, or reconciliation postponed them. */
export async function lapsedIntentIds(db: Db, nowIso: string, limit: number): Promise<string[]> {
  const rows = await db
    .selectFrom('provisioning_intents')
    .select('id')
    .where('state', '=', 'pending')
    .where('lease_until', '<', nowIso)
    .orderBy('lease_until')
    .limit(limit)
    .execute();
  return rows.map((r) => r.id);
}

/** The intent once no transaction is still writing it (afterPendingCommits). */
export function findIntentAfterWriters(db: Db, id: string, dialect: Dialect): Promise<IntentRow | undefined> {
  const query = db.selectFrom('provisioning_intents').selectAll().where('id', '=', id);
  return afterPendingCommits(query, dialect).executeTakeFirst();
}

export function findIntent(db: Db, id: string): Promise<IntentRow | undefined> {
  return db.selectFrom('provisioning_intents').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Pending intents, for the orphans listing: creates not yet finished or undone. */
export function pendingIntents(db: Db) {
  return db
    .selectFrom('provisioning_intents')
    .select(['id', 'fhir_type', 'created_at', 'lease_until', 'attempts', 'last_error', 'request_id'])
    .where('state', '=', 'pending')
    .orderBy('created_at')
    .limit(200)
    .execute();
}

/** What an abandoned intent's `last_error` says about the late look (reconciliation.ts). */
export const LATE_LOOK = {
  /** Nothing was found; one more look is due at `lease_until`. */
  due: 'not_created',
  /** A reconciler is looking (until `lease_until`; after it, the look is due again). */
  looking: 'late_look',
  /** The second look found nothing either. */
  confirmed: 'not_created_confirmed',
  /** A create landed after the first look: its resource is listed as an orphan. */
  landedLate: 'late_create',
} as const;

/** Abandoned intents whose late look is due (or was left by a reconciler that died). */
export async function lateLookIds(db: Db, nowIso: string, limit: number): Promise<string[]> {
  const rows = await db
    .selectFrom('provisioning_intents')
    .select('id')
    .where('state', '=', 'abandoned')
    .where('last_error', 'in', [LATE_LOOK.due, LATE_LOOK.looking])
    .where('lease_until', '<', nowIso)
    .orderBy('lease_until')
    .limit(limit)
    .execute();
  return rows.map((r) => r.id);
}

/** Takes the late look of one intent for `leaseUntilIso`; undefined when another reconciler has it or it is done. */
export async function claimLateLook(db: Db, id: string, nowIso: string, leaseUntilIso: string) {
  return db
    .updateTable('provisioning_intents')
    .set({ last_error: LATE_LOOK.looking, lease_until: leaseUntilIso, updated_at: nowIso })
    .where('id', '=', id)
    .where('state', '=', 'abandoned')
    .where('last_error', 'in', [LATE_LOOK.due, LATE_LOOK.looking])
    .where('lease_until', '<', nowIso)
    .returningAll()
    .executeTakeFirst();
}

/** Ends a late look with its result, or puts it off (`last_error` due again, a later `lease_until`). */
export async function endLateLook(
  db: Db,
  id: string,
  result: { last_error: string; lease_until?: string; state?: 'orphaned'; updated_at: string },
): Promise<void> {
  await db
    .updateTable('provisioning_intents')
    .set(result)
    .where('id', '=', id)
    .where('last_error', '=', LATE_LOOK.looking)
    .execute();
}
