import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { currentKey, everyKey, type SecretKey } from '../secrets.js';
import { normalizeEmail } from '../users/userRepository.js';

/**
 * One-time access codes (DESIGN.md section 7): 80 bits from the CSPRNG, written as 16 Crockford
 * base32 characters in groups of four (`7KQ2-M9XD-4HTP-R3VW`). Input ignores case, spaces and
 * hyphens, and reads I/L as 1 and O as 0. Stored only as an HMAC-SHA-256 keyed with a secret
 * outside the database, bound to the account's email and the code's purpose.
 * https://www.crockford.com/base32.html
 */

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const ACCESS_CODE_LENGTH = 16;
export const ACCESS_CODE_BITS = ACCESS_CODE_LENGTH * 5;
/** Wrong tries after which a code is void (only a new code works). */
export const MAX_CODE_ATTEMPTS = 5;

export type CodePurpose = 'signup' | 'password_reset';

/** A fresh code, grouped for reading aloud and typing. */
export function generateAccessCode(): string {
  const bytes = randomBytes(ACCESS_CODE_LENGTH);
  // 256 is a multiple of 32, so taking each byte mod 32 is unbiased
  const chars = [...bytes].map((b) => ALPHABET[b % 32]).join('');
  return chars.match(/.{4}/g)!.join('-');
}

/** The canonical form of a typed code, or undefined when it cannot be one. */
export function normalizeAccessCode(input: string): string | undefined {
  const compact = input.toUpperCase().replace(/[\s-]/g, '').replace(/[IL]/g, '1').replace(/O/g, '0');
  if (compact.length !== ACCESS_CODE_LENGTH) return undefined;
  for (const ch of compact) if (!ALPHABET.includes(ch)) return undefined;
  return compact;
}

function keyedHash(key: Buffer, purpose: CodePurpose, email: string, code: string): string {
  const canonical = normalizeAccessCode(code) ?? code;
  return createHmac('sha256', key)
    .update(`${purpose}\n${normalizeEmail(email)}\n${canonical}`)
    .digest('hex');
}

/** The keyed hash stored in the database (current key); a dump of the table reveals no usable code. */
export function hashAccessCode(key: SecretKey, purpose: CodePurpose, email: string, code: string): string {
  return keyedHash(currentKey(key), purpose, email, code);
}

/**
 * Constant-time comparison of a typed code with the stored hash, under every key of the ring: a
 * code hashed before a rotation of APP_SECRET still matches through the previous key. Every key
 * is tried every time, so the timing does not tell which one matched.
 */
export function accessCodeMatches(
  key: SecretKey,
  purpose: CodePurpose,
  email: string,
  typed: string,
  storedHash: string | null,
): boolean {
  const canonical = normalizeAccessCode(typed);
  const expected = Buffer.from(storedHash ?? '0'.repeat(64), 'hex');
  let matched = false;
  for (const candidate of everyKey(key)) {
    const actual = Buffer.from(keyedHash(candidate, purpose, email, canonical ?? 'INVALID'), 'hex');
    // no short-circuit: each key costs the same whether an earlier one matched or not
    const same = expected.length === actual.length && timingSafeEqual(expected, actual);
    matched = same || matched;
  }
  return matched && canonical !== undefined && storedHash !== null;
}
