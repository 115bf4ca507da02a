import { createHash } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import { precompiled } from '../../db/precompiled.js';
import type { Database } from '../../db/schema.js';
import type { Clock } from '../clock.js';
import { AppError } from '../errors.js';

/**
 * Fixed-window counters in the database, so every gateway instance shares them. Keys are
 * hashed (no emails in the table). Limits only slow an attacker down: a window always ends,
 * so nobody can lock an account out for good. Over a limit -> 429 with Retry-After, the same
 * whether or not the account exists. Figures are in docs/security.md.
 */

export interface LimitRule {
  /** Which counter: e.g. `login.account`. */
  readonly name: string;
  readonly limit: number;
  readonly windowSeconds: number;
}

export const RATE_LIMITS = {
  /** Failed logins per account: 5 per 5 min, so at most 60 per hour (OWASP: never more than 100). */
  loginAccount: { name: 'login.account', limit: 5, windowSeconds: 300 },
  /** Failed logins per client IP (password spraying across accounts). */
  loginIp: { name: 'login.ip', limit: 30, windowSeconds: 300 },
  /** Signup and reset attempts per email (each code also voids after 5 wrong tries). */
  codeEmail: { name: 'code.email', limit: 10, windowSeconds: 900 },
  codeIp: { name: 'code.ip', limit: 30, windowSeconds: 900 },
  /** Mails asked for (resend, forgot) per email and per IP: stops mail bombing. */
  mailEmail: { name: 'mail.email', limit: 3, windowSeconds: 3600 },
  mailIp: { name: 'mail.ip', limit: 10, windowSeconds: 3600 },
} as const satisfies Record<string, LimitRule>;

/** A rule applied to one subject (an email or an IP). */
export interface LimitKey {
  readonly rule: LimitRule;
  readonly subject: string | null;
}

interface Window {
  readonly bucket: string;
  readonly start: string;
  readonly endsAt: number;
}

function windowOf(key: LimitKey & { subject: string }, now: Date): Window {
  const size = key.rule.windowSeconds * 1000;
  const start = Math.floor(now.getTime() / size) * size;
  const digest = createHash('sha256').update(key.subject).digest('base64url').slice(0, 22);
  return { bucket: `${key.rule.name}:${digest}`, start: new Date(start).toISOString(), endsAt: start + size };
}

const withSubject = (keys: readonly LimitKey[]) =>
  keys.filter((k): k is LimitKey & { subject: string } => !!k.subject);

/** A 429, with the counters that were over their limit (for the audit, never the answer). */
export class RateLimited extends AppError {
  constructor(
    retryAfterMs: number,
    readonly limits: readonly string[],
  ) {
    super('rate_limited', {
      headers: { 'Retry-After': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) },
    });
  }
}

const countOne = precompiled(['bucket', 'start'], (db, window) =>
  db
    .insertInto('rate_limits')
    .values({ bucket: window.bucket, window_start: window.start, count: 1 })
    .onConflict((oc) =>
      oc
        .columns(['bucket', 'window_start'])
        .doUpdateSet((eb) => ({ count: eb('rate_limits.count', '+', 1) })),
    )
    .returning('count'),
);

const giveBackOne = precompiled(['bucket', 'start'], (db, window) =>
  db
    .updateTable('rate_limits')
    .set((eb) => ({ count: eb('count', '-', 1) }))
    .where('bucket', '=', window.bucket)
    .where('window_start', '=', window.start)
    .where('count', '>', 0),
);

/** Adds one to each counter; with `enforce`, throws 429 when this hit goes over a limit. */
export async function countHit(
  db: Kysely<Database>,
  clock: Clock,
  keys: readonly LimitKey[],
  options: { enforce: boolean } = { enforce: true },
): Promise<void> {
  const now = clock.now();
  let retryAfter = 0;
  const over: string[] = [];
  // the counters of one attempt in one commit
  await db.transaction().execute(async (trx) => {
    for (const key of withSubject(keys)) {
      const window = windowOf(key, now);
      const [row] = (await countOne(trx, window)).rows;
      if (!row) throw new Error('rate limit upsert returned no count');
      if (row.count > key.rule.limit) {
        retryAfter = Math.max(retryAfter, window.endsAt - now.getTime());
        over.push(key.rule.name);
      }
    }
  });
  if (options.enforce && retryAfter > 0) throw new RateLimited(retryAfter, over);
}

/** Gives back one hit (e.g. a login that succeeded: only failures should count). */
export async function refundHit(
  db: Kysely<Database> | Transaction<Database>,
  clock: Clock,
  keys: readonly LimitKey[],
): Promise<void> {
  const now = clock.now();
  for (const key of withSubject(keys)) {
    await giveBackOne(db, windowOf(key, now));
  }
}

/** Drops windows that ended a day ago or more; called by the periodic housekeeping. */
export async function purgeOldWindows(db: Kysely<Database>, clock: Clock): Promise<void> {
  const cutoff = new Date(clock.now().getTime() - 86_400_000).toISOString();
  await db.deleteFrom('rate_limits').where('window_start', '<', cutoff).execute();
}
