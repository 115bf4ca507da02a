import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  isRefreshTokenShaped,
  makeRefreshToken,
  signedIdsOf,
  successorIdTime,
} from '../../src/auth/refreshTokens.js';
import { uuidv7 } from '../../src/ids.js';

const KEY = Buffer.alloc(32, 1);
const OTHER = Buffer.alloc(32, 2);
const SESSION = uuidv7(Date.UTC(2026, 11, 1));
const TOKEN = uuidv7(Date.UTC(2026, 11, 2));
const made = makeRefreshToken(KEY, SESSION, TOKEN);

/** The token with one character of its body replaced. */
function changedAt(token: string, index: number): string {
  const at = 3 + index;
  return `${token.slice(0, at)}${token[at] === 'A' ? 'B' : 'A'}${token.slice(at + 1)}`;
}

describe('refresh tokens', () => {
  it('names its session and row under its key, or under the ring that still holds the key', () => {
    expect(signedIdsOf(KEY, made)).toEqual({ sessionId: SESSION, tokenId: TOKEN });
    expect(signedIdsOf({ current: OTHER, all: [OTHER, KEY] }, made)).toEqual({
      sessionId: SESSION,
      tokenId: TOKEN,
    });
    expect(made).toMatch(/^rt_[A-Za-z0-9_-]{107}$/);
    expect(makeRefreshToken(KEY, SESSION, TOKEN)).not.toBe(made); // 256 fresh random bits each
  });

  it.each([
    ['another key', signedIdsOf(OTHER, made)],
    ['a changed session id', signedIdsOf(KEY, changedAt(made, 2))],
    ['a changed row id', signedIdsOf(KEY, changedAt(made, 25))],
    ['a changed random part', signedIdsOf(KEY, changedAt(made, 60))],
    ['a changed HMAC', signedIdsOf(KEY, changedAt(made, 100))],
    ['a character appended', signedIdsOf(KEY, `${made}A`)],
    ['a character cut', signedIdsOf(KEY, made.slice(0, -1))],
    // the last character's unused bits: another spelling of the same bytes is not the token
    [
      'another spelling of its last character',
      signedIdsOf(KEY, `${made.slice(0, -1)}${made.at(-1) === 'A' ? 'B' : 'A'}`),
    ],
    [
      'a token made before the ids were signed',
      signedIdsOf(KEY, `rt_${randomBytes(32).toString('base64url')}`),
    ],
    ['no prefix', signedIdsOf(KEY, made.slice(3))],
    ['garbage', signedIdsOf(KEY, 'rt_!!!')],
  ])('%s names nothing', (_what, ids) => {
    expect(ids).toBeUndefined();
  });

  it.each([
    [made, true],
    [`rt_${randomBytes(32).toString('base64url')}`, true],
    [`rt_${'A'.repeat(108)}`, false],
    ['xt_abc', false],
  ])('%s is shaped like one: %s', (text, expected) => {
    expect(isRefreshTokenShaped(text)).toBe(expected);
  });

  it.each([
    ['the clock moved on', 1_000, 5_000, 5_000],
    ['the same millisecond', 5_000, 5_000, 5_001],
    ['a clock that went back', 5_000, 4_000, 5_001],
  ])(
    'the next row id is made at a later millisecond than the last (%s)',
    (_what, previousMs, nowMs, expected) => {
      const next = successorIdTime(uuidv7(previousMs), nowMs);
      expect(next).toBe(expected);
      expect(uuidv7(next) > uuidv7(previousMs)).toBe(true);
    },
  );
});
