import { createHash } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import { isLockTimeout } from '../../db/connection.js';
import type { Database } from '../../db/schema.js';
import type { Clock } from '../clock.js';
import { AppError } from '../errors.js';
import { heartbeat, isoAfter, LEASE_MS } from '../leases.js';
import type { Logger } from '../logger.js';
import { isUniqueViolation } from '../users/userRepository.js';

/**
 * Idempotency-Key handling (draft-ietf-httpapi-idempotency-key-header): a retried request with
 * the same key and body replays the first answer instead of creating twice; the same key with
 * another body is refused (422); keys are scoped to the caller and kept 24 hours.
 *
 * A key in progress is locked only while its request runs: the lock is a short lease renewed
 * every few seconds (leases.ts). A retry after a crash finds the lease lapsed, lets
 * reconciliation finish the create the crashed request started (the key's intent), and then
 * replays that answer — or, when nothing had been created, does the work itself.
 */

const KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;
const KEEP_MS = 24 * 60 * 60 * 1000;

export interface StoredResponse {
  readonly status: number;
  readonly body: unknown;
  readonly headers: Readonly<Record<string, string>>;
}

export interface IdempotentRequest {
  readonly actorUserId: string;
  readonly key: string | undefined;
  readonly route: string;
  readonly body: unknown;
}

/** The key a request holds while it runs (its lock is renewed until the work ends). */
export interface HeldKey {
  readonly actorUserId: string;
  readonly key: string;
}

export interface IdempotencyDeps {
  readonly db: Kysely<Database>;
  /** Where the lock is renewed: a connection that never waits on a lock (db/connection.ts). */
  readonly backgroundDb: Kysely<Database>;
  readonly clock: Clock;
  readonly logger: Logger;
}

type Db = Kysely<Database> | Transaction<Database>;

/** JSON with sorted keys, so the same body hashes (and compares) the same whatever its key order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

function requestHash(route: string, body: unknown): string {
  return createHash('sha256')
    .update(`${route}\n${canonicalJson(body)}`)
    .digest('hex');
}

function findKey(db: Db, actorUserId: string, key: string) {
  return db
    .selectFrom('idempotency_keys')
    .selectAll()
    .where('actor_user_id', '=', actorUserId)
    .where('key', '=', key)
    .executeTakeFirst();
}

type KeyRow = NonNullable<Awaited<ReturnType<typeof findKey>>>;

function replay(existing: KeyRow): StoredResponse {
  return {
    status: existing.response_status ?? 200,
    body: JSON.parse(existing.response_body ?? 'null'),
    headers: { ...JSON.parse(existing.response_headers ?? '{}'), 'Idempotent-Replayed': 'true' },
  };
}

function stillRunning(existing: KeyRow, now: Date): AppError {
  const seconds = Math.max(1, Math.ceil((Date.parse(existing.locked_until ?? '') - now.getTime()) / 1000));
  return new AppError('conflict', {
    detail: 'A request with this Idempotency-Key is still being processed; retry shortly.',
    headers: { 'Retry-After': String(Number.isFinite(seconds) ? seconds : 1) },
  });
}

/** Stores the answer for replays; inside the transaction that made it, so a crash cannot separate them. */
export async function finishKey(db: Db, held: HeldKey, response: StoredResponse): Promise<void> {
  await db
    .updateTable('idempotency_keys')
    .set({
      state: 'done',
      locked_until: null,
      response_status: response.status,
      response_body: JSON.stringify(response.body),
      response_headers: JSON.stringify(response.headers),
    })
    .where('actor_user_id', '=', held.actorUserId)
    .where('key', '=', held.key)
    .where('state', '=', 'in_progress')
    .execute();
}

/**
 * Frees a key whose work created nothing (failed, or undone by reconciliation): the client may
 * retry with it. Only while `intentId` is the key's latest intent (null: while it has none): a
 * retry may have linked a newer intent to the key meanwhile, whose completion must still find
 * the key to store its answer (else the account exists and every retry answers 409).
 */
export async function releaseKey(db: Db, held: HeldKey, intentId: string | null): Promise<void> {
  await db
    .deleteFrom('idempotency_keys')
    .where('actor_user_id', '=', held.actorUserId)
    .where('key', '=', held.key)
    .where('state', '=', 'in_progress')
    .where('intent_id', intentId === null ? 'is' : '=', intentId)
    .execute();
}

/** The key an intent was started under, if any. */
export function keyOfIntent(intent: {
  actor_user_id: string;
  idempotency_key: string | null;
}): HeldKey | undefined {
  return intent.idempotency_key === null
    ? undefined
    : { actorUserId: intent.actor_user_id, key: intent.idempotency_key };
}

/**
 * Runs `work` once per (caller, key); without a key it simply runs. `resume(intentId)` is how a
 * retry finishes what a crashed request started (reconciliation of its provisioning intent).
 */
export async function withIdempotency(
  deps: IdempotencyDeps,
  request: IdempotentRequest,
  work: (held: HeldKey | undefined) => Promise<StoredResponse>,
  resume: (intentId: string) => Promise<void>,
): Promise<StoredResponse> {
  const { key, actorUserId } = request;
  if (key === undefined) return work(undefined);
  if (!KEY_PATTERN.test(key)) {
    throw new AppError('validation_failed', {
      errors: [{ path: 'Idempotency-Key', message: 'must be 1-255 visible ASCII characters' }],
    });
  }
  const hash = requestHash(request.route, request.body);
  const held: HeldKey = { actorUserId, key };
  let lock: string | undefined;
  for (let round = 0; round < 4 && lock === undefined; round++) {
    const now = deps.clock.now();
    const existing = await findKey(deps.db, actorUserId, key);
    if (!existing || existing.expires_at <= now.toISOString()) {
      lock = await insertKey(deps, request, hash, existing !== undefined);
      continue;
    }
    if (existing.request_hash !== hash) throw new AppError('idempotency_key_reused');
    if (existing.state === 'done') return replay(existing);
    if ((existing.locked_until ?? '') > now.toISOString()) throw stillRunning(existing, now);
    // its request crashed: finish what it started, then look again (done -> replay, released -> ours)
    if (existing.intent_id) {
      await resume(existing.intent_id);
      const after = await findKey(deps.db, actorUserId, key);
      if (after?.state === 'done') return replay(after);
      if (after && after.locked_until !== existing.locked_until) continue;
    }
    lock = await takeOver(deps, held, existing.locked_until);
  }
  if (lock === undefined) throw stillRunning({ locked_until: null } as KeyRow, deps.clock.now());

  let current = lock;
  const beat = heartbeat(async () => {
    const next = isoAfter(deps.clock.now(), LEASE_MS);
    const renewed = await casLock(deps.backgroundDb, held, current, next);
    if (renewed) current = next;
    return renewed;
  }, deps.logger);
  try {
    const response = await work(held);
    await beat.stop();
    await finishKey(deps.db, held, response);
    return response;
  } catch (error) {
    await beat.stop();
    // a key whose work recorded an intent is the intent's to settle: reconciliation finishes or frees it
    await releaseKey(deps.db, held, null).catch((e: unknown) =>
      deps.logger.warn({ err: e }, 'could not release an idempotency key'),
    );
    throw error;
  }
}

/** Inserts the key in progress, locked for one lease; undefined when a concurrent request won the insert. */
async function insertKey(
  deps: IdempotencyDeps,
  request: IdempotentRequest,
  hash: string,
  replacingExpired: boolean,
): Promise<string | undefined> {
  const now = deps.clock.now();
  const lockedUntil = isoAfter(now, LEASE_MS);
  const key = request.key as string;
  try {
    if (replacingExpired) {
      await deps.db
        .deleteFrom('idempotency_keys')
        .where('actor_user_id', '=', request.actorUserId)
        .where('key', '=', key)
        .where('expires_at', '<=', now.toISOString())
        .execute();
    }
    await deps.db
      .insertInto('idempotency_keys')
      .values({
        actor_user_id: request.actorUserId,
        key,
        route: request.route,
        request_hash: hash,
        state: 'in_progress',
        response_status: null,
        response_body: null,
        response_headers: null,
        created_at: now.toISOString(),
        expires_at: isoAfter(now, KEEP_MS),
        locked_until: lockedUntil,
        intent_id: null,
      })
      .execute();
    return lockedUntil;
  } catch (error) {
    // a concurrent request with the same key won the insert: the next round answers as a retry would
    if (isUniqueViolation(error)) return undefined;
    if (isLockTimeout(error)) throw new AppError('storage_unavailable', { cause: error });
    throw error;
  }
}

/** Takes a lapsed key over (compare-and-set on the lock we saw); undefined when someone was faster. */
async function takeOver(
  deps: IdempotencyDeps,
  held: HeldKey,
  seen: string | null,
): Promise<string | undefined> {
  const next = isoAfter(deps.clock.now(), LEASE_MS);
  return (await casLock(deps.db, held, seen, next)) ? next : undefined;
}

async function casLock(db: Db, held: HeldKey, seen: string | null, next: string): Promise<boolean> {
  let query = db
    .updateTable('idempotency_keys')
    .set({ locked_until: next })
    .where('actor_user_id', '=', held.actorUserId)
    .where('key', '=', held.key)
    .where('state', '=', 'in_progress');
  query = seen === null ? query.where('locked_until', 'is', null) : query.where('locked_until', '=', seen);
  const result = await query.executeTakeFirst();
  return result.numUpdatedRows === 1n;
}
