import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  ACCESS_CODE_BITS,
  accessCodeMatches,
  generateAccessCode,
  hashAccessCode,
  normalizeAccessCode,
} from '../../src/auth/accessCodes.js';

const key = randomBytes(32);

describe('access codes', () => {
  it('carries at least 64 bits in four groups of Crockford base32', () => {
    expect(ACCESS_CODE_BITS).toBeGreaterThanOrEqual(64);
    const codes = new Set(Array.from({ length: 2000 }, generateAccessCode));
    expect(codes.size).toBe(2000);
    for (const code of codes) expect(code).toMatch(/^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$/);
  });

  it('uses every symbol of the alphabet about equally (no modulo bias)', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 4000; i++)
      for (const ch of generateAccessCode().replaceAll('-', '')) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    expect(counts.size).toBe(32);
    const expected = (4000 * 16) / 32;
    for (const n of counts.values()) expect(Math.abs(n - expected) / expected).toBeLessThan(0.15);
  });

  it('ignores case, spaces and hyphens and reads I, L as 1 and O as 0', () => {
    expect(normalizeAccessCode('7kq2 m9xd-4htp r3vw')).toBe('7KQ2M9XD4HTPR3VW');
    expect(normalizeAccessCode('ILO0-0000-0000-0000')).toBe('1100000000000000');
    expect(normalizeAccessCode('7KQ2-M9XD-4HTP')).toBeUndefined();
    expect(normalizeAccessCode('UUUU-UUUU-UUUU-UUUU')).toBeUndefined();
  });

  it('matches a typed code only for the same email and purpose', () => {
    const code = generateAccessCode();
    const stored = hashAccessCode(key, 'signup', 'ann@example.com', code);
    expect(stored).toMatch(/^[0-9a-f]{64}$/);
    expect(stored).not.toContain(code.replaceAll('-', ''));
    expect(
      accessCodeMatches(key, 'signup', 'ANN@example.com', code.toLowerCase().replaceAll('-', ' '), stored),
    ).toBe(true);
    expect(accessCodeMatches(key, 'signup', 'bob@example.com', code, stored)).toBe(false);
    expect(accessCodeMatches(key, 'password_reset', 'ann@example.com', code, stored)).toBe(false);
    expect(accessCodeMatches(randomBytes(32), 'signup', 'ann@example.com', code, stored)).toBe(false);
    expect(accessCodeMatches(key, 'signup', 'ann@example.com', generateAccessCode(), stored)).toBe(false);
    expect(accessCodeMatches(key, 'signup', 'ann@example.com', code, null)).toBe(false);
    expect(accessCodeMatches(key, 'signup', 'ann@example.com', 'garbage', stored)).toBe(false);
  });
});
