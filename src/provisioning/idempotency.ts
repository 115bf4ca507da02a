import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema.js';
import type { Clock } from '../clock.js';
import { AppError } from '../errors.js';
import { isUniqueViolation } from '../users/userRepository.js';

/**
 * Idempotency-Key handling (draft-ietf-httpapi-idempotency-key-header): a retried request with
 * the same key and body replays the first answer instead of creating twice; the same key with
 * another body is refused (422); keys are scoped to the caller and kept 24 hours.
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

/** JSON with sorted keys, so the same body hashes the same whatever its key order. */
function canonicalJson(value: unknown): string {
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

type Existing = Awaited<ReturnType<typeof findKey>>;

function findKey(db: Kysely<Database>, actorUserId: string, key: string) {
  return db
    .selectFrom('idempotency_keys')
    .selectAll()
    .where('actor_user_id', '=', actorUserId)
    .where('key', '=', key)
    .executeTakeFirst();
}

function replay(existing: NonNullable<Existing>, hash: string): StoredResponse {
  if (existing.request_hash !== hash) throw new AppError('idempotency_key_reused');
  if (existing.state !== 'done') {
    throw new AppError('conflict', {
      detail: 'A request with this Idempotency-Key is still being processed.',
    });
  }
  return {
    status: existing.response_status ?? 200,
    body: JSON.parse(existing.response_body ?? 'null'),
    headers: { ...JSON.parse(existing.response_headers ?? '{}'), 'Idempotent-Replayed': 'true' },
  };
}

/** Runs `work` once per (caller, key); without a key it simply runs. */
export async function withIdempotency(
  db: Kysely<Database>,
  clock: Clock,
  request: IdempotentRequest,
  work: () => Promise<StoredResponse>,
): Promise<StoredResponse> {
  const { key } = request;
  if (key === undefined) return work();
  if (!KEY_PATTERN.test(key)) {
    throw new AppError('validation_failed', {
      errors: [{ path: 'Idempotency-Key', message: 'must be 1-255 visible ASCII characters' }],
    });
  }
  const hash = requestHash(request.route, request.body);
  const now = clock.now();
  const existing = await findKey(db, request.actorUserId, key);
  if (existing && existing.expires_at > now.toISOString()) return replay(existing, hash);
  if (existing)
    await db
      .deleteFrom('idempotency_keys')
      .where('actor_user_id', '=', request.actorUserId)
      .where('key', '=', key)
      .execute();

  try {
    await db
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
        expires_at: new Date(now.getTime() + KEEP_MS).toISOString(),
      })
      .execute();
  } catch (error) {
    // a concurrent request with the same key won the insert: answer as a retry would
    const winner = isUniqueViolation(error) ? await findKey(db, request.actorUserId, key) : undefined;
    if (winner) return replay(winner, hash);
    throw error;
  }

  const release = () =>
    db
      .deleteFrom('idempotency_keys')
      .where('actor_user_id', '=', request.actorUserId)
      .where('key', '=', key)
      .execute();
  let response: StoredResponse;
  try {
    response = await work();
  } catch (error) {
    await release(); // a failed attempt stores nothing: the client may retry with the same key
    throw error;
  }
  await db
    .updateTable('idempotency_keys')
    .set({
      state: 'done',
      response_status: response.status,
      response_body: JSON.stringify(response.body),
      response_headers: JSON.stringify(response.headers),
    })
    .where('actor_user_id', '=', request.actorUserId)
    .where('key', '=', key)
    .execute();
  return response;
}
