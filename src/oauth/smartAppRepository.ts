import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { SmartAppRow } from '../../db/schema.js';
import type { Db } from '../users/userRepository.js';

/** SMART apps (OAuth clients) an admin registered: rows in, rows out, and the secret's hash. */

export function findSmartApp(db: Db, clientId: string): Promise<SmartAppRow | undefined> {
  return db.selectFrom('smart_apps').selectAll().where('client_id', '=', clientId).executeTakeFirst();
}

/**
 * Whether an origin is that of an active public app's redirect URI: the only origins a browser
 * app calls the token and revocation endpoints from (a confidential app's secret never sits in a browser).
 */
export async function isPublicAppOrigin(db: Db, origin: string): Promise<boolean> {
  const apps = await db
    .selectFrom('smart_apps')
    .select('redirect_uris')
    .where('client_type', '=', 'public')
    .where('is_active', '=', 1)
    .execute();
  return apps.some((app) =>
    (JSON.parse(app.redirect_uris) as string[]).some((uri) => URL.parse(uri)?.origin === origin),
  );
}

const SECRET_PREFIX = 'cs_';

/** A confidential app's secret: 256 bits from the CSPRNG, shown once. */
export function newClientSecret(): string {
  return `${SECRET_PREFIX}${randomBytes(32).toString('base64url')}`;
}

/**
 * SHA-256 of the secret. A secret of 256 random bits cannot be guessed, so a fast hash is
 * enough (as for refresh tokens); a dump of the table reveals no usable secret.
 */
export function hashClientSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** Constant-time comparison of a presented secret with the stored hash. */
export function clientSecretMatches(storedHash: string | null | undefined, presented: unknown): boolean {
  if (typeof storedHash !== 'string' || typeof presented !== 'string' || presented.length > 200) return false;
  const expected = Buffer.from(storedHash, 'hex');
  const actual = Buffer.from(hashClientSecret(presented), 'hex');
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}
