import { randomFillSync } from 'node:crypto';

const POOL_BYTES = 4096;
const pool = Buffer.alloc(POOL_BYTES);
let offset = POOL_BYTES;

/**
 * A UUIDv7 (RFC 9562 section 5.7): 48-bit millisecond timestamp then random bits, so ids sort
 * by creation time and serve as stable paging cursors without a separate sequence. The 74
 * random bits come from a pooled buffer refilled from the CSPRNG every ~400 ids: one
 * randomBytes call per id cost more than the rest of a request id or an audit row.
 */
export function uuidv7(now: number = Date.now()): string {
  if (offset + 10 > POOL_BYTES) {
    randomFillSync(pool);
    offset = 0;
  }
  const bytes = Buffer.allocUnsafe(16);
  bytes.writeUIntBE(now, 0, 6);
  pool.copy(bytes, 6, offset, offset + 10);
  offset += 10;
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x70;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The form of the ids uuidv7 makes (any letter case: the request id check must not be dodged by case). */
export function isUuidV7(value: string): boolean {
  return UUIDV7.test(value);
}

const UUIDV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

/**
 * The smallest UUIDv7 of millisecond `ms`: every id uuidv7 made at `ms` or later compares (as a
 * string) at or above it, every earlier one below. So `id < uuidv7Floor(t)` selects rows made
 * before `t` by the primary key's index alone.
 */
export function uuidv7Floor(ms: number): string {
  const hex = Math.max(0, Math.floor(ms)).toString(16).padStart(12, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-7000-8000-000000000000`;
}
