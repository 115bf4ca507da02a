import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  COMMON_PASSWORDS_FILE,
  commonPasswords,
  savedCommonPasswords,
  writeCommonPasswords,
} from '../../src/auth/commonPasswords.mjs';
import { checkPassword, isCommonPassword } from '../../src/auth/passwordPolicy.js';
import { projectFile } from '../../src/paths.js';
import { tempDir } from '../helpers/tempDir.js';

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

describe('the breached-password list', () => {
  const dir = tempDir();
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const missing = path.join(dir, 'none.txt');
  // the package's own list, decompressed: what every saved copy must equal
  const packaged = commonPasswords(missing);
  const words = packaged.split('\n').filter(Boolean);

  it("the build's copy is the package's list, lowercased, each once", () => {
    // straight from the package, as the policy read it before the build saved a copy
    const { dictionary } = createRequire(import.meta.url)('@zxcvbn-ts/language-common') as {
      dictionary: Record<'passwords-common', string[]>;
    };
    const listed = new Set(dictionary['passwords-common'].map((word) => word.toLowerCase()));
    expect(listed.size).toBeGreaterThan(40_000);
    expect(new Set(words)).toEqual(listed);
    expect(words).toHaveLength(listed.size);
    expect(savedCommonPasswords(projectFile(COMMON_PASSWORDS_FILE))).toBe(packaged);
    const file = path.join(dir, 'saved.txt');
    writeCommonPasswords(file);
    expect(savedCommonPasswords(file)).toBe(packaged);
    expect(commonPasswords(file)).toBe(packaged);
  });

  it('a copy missing, made from another version of the package or cut short is not used: the package is', () => {
    expect(savedCommonPasswords(missing)).toBeUndefined();
    const other = path.join(dir, 'other.txt');
    fs.writeFileSync(
      other,
      `# common passwords, layout 1, from @zxcvbn-ts/language-common@0.0.1\npassword\n`,
    );
    expect(savedCommonPasswords(other)).toBeUndefined();
    expect(commonPasswords(other)).toBe(packaged);
    fs.writeFileSync(other, '');
    expect(savedCommonPasswords(other)).toBeUndefined();
    // a copy cut short: its stamp is right, its end is missing
    const whole = fs.readFileSync(projectFile(COMMON_PASSWORDS_FILE), 'utf8');
    fs.writeFileSync(other, whole.slice(0, whole.length / 2));
    expect(savedCommonPasswords(other)).toBeUndefined();
    expect(commonPasswords(other)).toBe(packaged);
  });

  const first = words[0] as string;
  const last = words.at(-1) as string;
  const unlisted = (word: string) => (words.includes(word) ? undefined : word);
  it.each([
    ['a listed password', 'password', true],
    ['the first listed', first, true],
    ['the last listed', last, true],
    ['part of a listed one', unlisted(first.slice(0, -1)) ?? 'not-listed-after-all', false],
    ['a listed one with more after it', unlisted(`${first}x`) ?? 'not-listed-after-all', false],
    ['two listed ones across a line break', `${first}\n${words[1]}`, false],
    ['a long passphrase', 'a long and plain passphrase', false],
    ['nothing', '', false],
  ])('%s', (_what, word, listed) => {
    expect(isCommonPassword(word)).toBe(listed);
  });
});
