import { createHash } from 'node:crypto';
import ipaddr from 'ipaddr.js';
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
  /** The subject is a client address, counted by the block its holder has (addressBlock). */
  readonly byAddress?: boolean;
}

export const RATE_LIMITS = {
  /** Failed logins per account: 5 per 5 min, so at most 60 per hour (OWASP: never more than 100). */
  loginAccount: { name: 'login.account', limit: 5, windowSeconds: 300 },
  /** Failed logins per client IP (password spraying across accounts). */
  loginIp: { name: 'login.ip', limit: 30, windowSeconds: 300, byAddress: true },
  /** Signup and reset attempts per email (each code also voids after 5 wrong tries). */
  codeEmail: { name: 'code.email', limit: 10, windowSeconds: 900 },
  codeIp: { name: 'code.ip', limit: 30, windowSeconds: 900, byAddress: true },
  /** Mails asked for (resend, forgot) per email and per IP: stops mail bombing. */
  mailEmail: { name: 'mail.email', limit: 3, windowSeconds: 3600 },
  mailIp: { name: 'mail.ip', limit: 10, windowSeconds: 3600, byAddress: true },
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

/**
 * The block a client address is counted by. An IPv6 client is given a whole /64 (RFC 6177): counted
 * per address, one client had 2^64 fresh windows. An IPv4-mapped IPv6 address is its IPv4 one.
 */
export function addressBlock(address: string): string {
  const zoneless = address.split('%')[0] ?? address;
  if (!ipaddr.isValid(zoneless)) return address;
  let parsed = ipaddr.parse(zoneless);
  if (parsed instanceof ipaddr.IPv6 && parsed.isIPv4MappedAddress()) parsed = parsed.toIPv4Address();
  if (parsed instanceof ipaddr.IPv4) return parsed.toString();
  return `${parsed.toNormalizedString().split(':').slice(0, 4).join(':')}::/64`;
}

function windowOf(key: LimitKey & { subject: string }, now: Date): Window {
  const size = key.rule.windowSeconds * 1000;
  const start = Math.floor(now.getTime() / size) * size;
  const subject = key.rule.byAddress ? addressBlock(key.subject) : key.subject;
  const digest = createHash('sha256').update(subject).digest('base64url').slice(0, 22);
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

/** The names a statement over `count` windows binds: bucket0, start0, bucket1, start1, ... */
const windowNames = (count: number) =>
  Array.from({ length: count }, (_, i) => [`bucket${i}`, `start${i}`]).flat();

const windowValues = (windows: readonly Window[]) =>
  Object.fromEntries(
    windows.flatMap((w, i) => [
      [`bucket${i}`, w.bucket],
      [`start${i}`, w.start],
    ]),
  );

/** A named stand-in of a precompiled statement (`precompiled` types them `never`, to fit any column). */
const slot = (values: Readonly<Record<string, never>>, name: string): never => values[name] as never;

/** A statement per number of windows (an attempt has one or two), compiled once each. */
function perWindowCount<S>(make: (count: number) => S): (count: number) => S {
  const made = new Map<number, S>();
  return (count) => {
    let statement = made.get(count);
    if (!statement) {
      statement = make(count);
      made.set(count, statement);
    }
    return statement;
  };
}

// every window of an attempt in one upsert, its rows locked in the order of its values
const countAll = perWindowCount((count) =>
  precompiled(windowNames(count), (db, values) =>
    db
      .insertInto('rate_limits')
      .values(
        Array.from({ length: count }, (_, i) => ({
          bucket: slot(values, `bucket${i}`),
          window_start: slot(values, `start${i}`),
          count: 1,
        })),
      )
      .onConflict((oc) =>
        oc
          .columns(['bucket', 'window_start'])
          .doUpdateSet((eb) => ({ count: eb('rate_limits.count', '+', 1) })),
      )
      .returning(['bucket', 'count']),
  ),
);

const giveBackOne = precompiled(['bucket', 'start'], (db, window) =>
  db
    .updateTable('rate_limits')
    .set((eb) => ({ count: eb('count', '-', 1) }))
    .where('bucket', '=', window.bucket)
    .where('window_start', '=', window.start)
    .where('count', '>', 0),
);

/** The windows of these keys at `now`, each once (one upsert may not touch a row twice). */
function windowsOf(keys: readonly LimitKey[], now: Date): { key: LimitKey; window: Window }[] {
  const seen = new Set<string>();
  return withSubject(keys).flatMap((key) => {
    const window = windowOf(key, now);
    if (seen.has(window.bucket)) return [];
    seen.add(window.bucket);
    return [{ key, window }];
  });
}

/** Adds one to each counter; with `enforce`, throws 429 when this hit goes over a limit. */
export async function countHit(
  db: Kysely<Database>,
  clock: Clock,
  keys: readonly LimitKey[],
  options: { enforce: boolean } = { enforce: true },
): Promise<void> {
  const now = clock.now();
  const counted = windowsOf(keys, now);
  if (counted.length === 0) return;
  const windows = counted.map((c) => c.window);
  // the counters of one attempt in one statement, so in one commit
  const { rows } = await countAll(windows.length)(db, windowValues(windows));
  const countOf = new Map(rows.map((row) => [row.bucket, row.count]));
  let retryAfter = 0;
  const over: string[] = [];
  for (const { key, window } of counted) {
    const count = countOf.get(window.bucket);
    if (count === undefined) throw new Error('rate limit upsert returned no count');
    if (count > key.rule.limit) {
      retryAfter = Math.max(retryAfter, window.endsAt - now.getTime());
      over.push(key.rule.name);
    }
  }
  if (options.enforce && retryAfter > 0) throw new RateLimited(retryAfter, over);
}

/** Gives back one hit (e.g. a login that succeeded: only failures should count). */
export async function refundHit(
  db: Kysely<Database> | Transaction<Database>,
  clock: Clock,
  keys: readonly LimitKey[],
): Promise<void> {
  // one window at a time, in the count's order: one UPDATE over both locked them in the table's
  // order on PostgreSQL, and deadlocked against a concurrent count of the same two
  for (const { window } of windowsOf(keys, clock.now())) await giveBackOne(db, window);
}

/** Drops windows that ended a day ago or more; called by the periodic housekeeping. */
export async function purgeOldWindows(db: Kysely<Database>, clock: Clock): Promise<void> {
  const cutoff = new Date(clock.now().getTime() - 86_400_000).toISOString();
  await db.deleteFrom('rate_limits').where('window_start', '<', cutoff).execute();
}
