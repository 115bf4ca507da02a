import { describe, expect, it } from 'vitest';
import { checkPassword } from '../../src/auth/passwordPolicy.js';

/** The one password policy (docs/security.md "Passwords"): length, breach list, context words, repetition. */
const policy = { minLength: 15 };
const context = { email: 'ann.lee@example.com', appName: 'Test Clinic' };

describe('checkPassword', () => {
  it.each([
    ['a long plain passphrase', 'a long and plain passphrase', undefined],
    ['digits and spaces only', '8472 9163 5520 1187', undefined],
    ['symbols only', '!@#%&*()_-{}[]:;"', undefined],
    ['emoji', '🐢🌵🎻🧭🪁🍋🛶🦉🧩🪴🎲🌙🔑🍄🐝', undefined],
    ['too short', 'short passphrase'.slice(0, 14), 'must be at least 15 characters'],
    ['too long', 'x'.repeat(129), 'must be at most 128 characters'],
    [
      'the local part, repeated',
      'ann.lee ann.lee ann.lee',
      'must not be based on your email address or the name of this service',
    ],
    [
      'the email itself',
      'ann.lee@example.com',
      'must not be based on your email address or the name of this service',
    ],
    [
      'the app name with digits',
      'Test Clinic 2026 2026',
      'must not be based on your email address or the name of this service',
    ],
    ['one repeated character', 'aaaaaaaaaaaaaaaa', 'must not be one repeated character'],
    ['one repeated digit', '1111111111111111', 'must not be one repeated character'],
    // few breached passwords are 15 long on their own: padded ones are tried first (found by review)
    [
      'a breached password padded with digits',
      'password123456789',
      'is too common: it appears in lists of breached passwords',
    ],
    [
      'a breached password padded with punctuation',
      '!!qwerty!!2024!!',
      'is too common: it appears in lists of breached passwords',
    ],
    [
      'a run of digits',
      '123456789012345',
      'must not be a run of characters such as 123456789012345 or abcdefghijklmno',
    ],
    [
      'a run of letters',
      'abcdefghijklmnop',
      'must not be a run of characters such as 123456789012345 or abcdefghijklmno',
    ],
    [
      'a run backwards',
      '987654321098765',
      'must not be a run of characters such as 123456789012345 or abcdefghijklmno',
    ],
    ['a listed word inside a passphrase', 'my password is long enough', undefined],
  ])('%s', (_what, password, refusal) => {
    expect(checkPassword(policy, password, context)).toBe(refusal);
  });
});
