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
  ])('%s', (_what, password, refusal) => {
    expect(checkPassword(policy, password, context)).toBe(refusal);
  });
});
