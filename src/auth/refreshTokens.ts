import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { currentKey, everyKey, type SecretKey } from '../secrets.js';

/**
 * The refresh token's text: `rt_` then, in base64url, the session's id, the token's row id, 256
 * random bits and an HMAC of the three (APP_SECRET's refresh-token key, 128 bits). Only the
 * stored SHA-256 of the whole token makes it usable (sessions.ts). The signed ids say whose a
 * token is once its row is gone: a spent token the housekeeping sweep deleted after it expired is
 * still told apart from a guess, and its return still ends the session (RFC 9700 §4.14.2).
 */

export const REFRESH_PREFIX = 'rt_';

const UUID_BYTES = 16;
const RANDOM_BYTES = 32;
const MAC_BYTES = 16;
const SIGNED_BYTES = 2 * UUID_BYTES + RANDOM_BYTES;
const TOKEN_BYTES = SIGNED_BYTES + MAC_BYTES;
/** The longest text that can be one of ours: `rt_` and 80 bytes (`rt_` and 32 bytes before the ids were signed). */
const MAX_TOKEN_LENGTH = REFRESH_PREFIX.length + Math.ceil((TOKEN_BYTES * 4) / 3);

const uuidBytes = (uuid: string) => Buffer.from(uuid.replaceAll('-', ''), 'hex');

function uuidOf(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// domain-separated: the key signs nothing else, and a later format gets another label
const macOf = (key: Buffer, signed: Buffer) =>
  createHmac('sha256', key)
    .update('fhir-facade refresh-token v1\0')
    .update(signed)
    .digest()
    .subarray(0, MAC_BYTES);

/** A new refresh token of session `sessionId`, stored as row `tokenId` (both UUIDs). */
export function makeRefreshToken(key: SecretKey, sessionId: string, tokenId: string): string {
  const signed = Buffer.concat([uuidBytes(sessionId), uuidBytes(tokenId), randomBytes(RANDOM_BYTES)]);
  return REFRESH_PREFIX + Buffer.concat([signed, macOf(currentKey(key), signed)]).toString('base64url');
}

/** Whether a text could be a refresh token at all: anything else is refused before any lookup. */
export function isRefreshTokenShaped(presented: string): boolean {
  return presented.startsWith(REFRESH_PREFIX) && presented.length <= MAX_TOKEN_LENGTH;
}

/**
 * The session and row a token names, when its HMAC is one of the ring's; undefined for a guess, a
 * changed token, or one made before the ids were signed (those are known by their row alone).
 */
export function signedIdsOf(
  key: SecretKey,
  presented: string,
): { readonly sessionId: string; readonly tokenId: string } | undefined {
  if (!isRefreshTokenShaped(presented)) return undefined;
  const text = presented.slice(REFRESH_PREFIX.length);
  const bytes = Buffer.from(text, 'base64url');
  // one spelling only: base64url's last character may carry unused bits
  if (bytes.length !== TOKEN_BYTES || bytes.toString('base64url') !== text) return undefined;
  const signed = bytes.subarray(0, SIGNED_BYTES);
  const mac = bytes.subarray(SIGNED_BYTES);
  if (!everyKey(key).some((k) => timingSafeEqual(macOf(k, signed), mac))) return undefined;
  return {
    sessionId: uuidOf(signed.subarray(0, UUID_BYTES)),
    tokenId: uuidOf(signed.subarray(UUID_BYTES, 2 * UUID_BYTES)),
  };
}

/** The millisecond a UUIDv7 was made at (its first 48 bits). */
function msOfUuidV7(id: string): number {
  return Number.parseInt(id.replaceAll('-', '').slice(0, 12), 16);
}

/**
 * The time to make the id of the token that replaces row `previousId` at: `nowMs`, or a millisecond
 * after the previous id's when the clock has not moved past it, so a session's tokens sort in the
 * order they were made (a swept token's return is reuse when a later one of its session exists).
 */
export function successorIdTime(previousId: string, nowMs: number): number {
  return Math.max(nowMs, msOfUuidV7(previousId) + 1);
}
