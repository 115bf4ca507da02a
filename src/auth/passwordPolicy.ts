import { projectFile } from '../paths.js';
import { COMMON_PASSWORDS_FILE, commonPasswords } from './commonPasswords.mjs';
import { normalizePassword, PASSWORD_MAX_LENGTH, passwordLength, passwordTooLong } from './passwords.js';

/**
 * The one password policy, used wherever a password is chosen (signup, reset, first admin).
 * NIST SP 800-63B-4: a long minimum for a single-factor password (default 15), at most 128
 * accepted, no composition rules, Unicode allowed (NFKC), refuse common and context passwords.
 */

let commonList: string | undefined;

/**
 * Whether `word` is one of the ~49k passwords most often seen in breaches
 * (@zxcvbn-ts/language-common, lowercased). The list is loaded on the first password chosen, not
 * at start, from the copy the build saved (src/auth/commonPasswords.mjs); one search of its text
 * takes ~0.1 ms, and a password is chosen rarely: no index of 49k strings is kept in memory.
 */
export function isCommonPassword(word: string): boolean {
  commonList ??= commonPasswords(projectFile(COMMON_PASSWORDS_FILE));
  // a word with a line break in it would match across two listed ones
  return !word.includes('\n') && commonList.includes(`\n${word}\n`);
}

export interface PasswordContext {
  /** The account's email: its local part may not be the password. */
  readonly email?: string;
  readonly appName?: string;
}

export interface PasswordPolicy {
  readonly minLength: number;
}

function contextWords(context: PasswordContext): string[] {
  const words = [context.email?.split('@')[0], context.email, context.appName];
  return words.filter((w): w is string => typeof w === 'string' && w.length >= 3).map((w) => w.toLowerCase());
}

/** Returns why a password is refused, or undefined when it is acceptable. */
export function checkPassword(
  policy: PasswordPolicy,
  password: string,
  context: PasswordContext = {},
): string | undefined {
  if (passwordTooLong(password)) return `must be at most ${PASSWORD_MAX_LENGTH} characters`;
  const normalized = normalizePassword(password);
  if (passwordLength(normalized) < policy.minLength) return `must be at least ${policy.minLength} characters`;
  const lower = normalized.toLowerCase();
  const compact = lower.replace(/[\s\p{P}\d]+/gu, '');
  // a breached password padded with digits or punctuation to the minimum (`password123456789`) is
  // tried first too: few listed passwords are 15 characters long on their own
  if (isCommonPassword(lower) || (compact.length >= 4 && isCommonPassword(compact)))
    return 'is too common: it appears in lists of breached passwords';
  if (isRun(lower)) return 'must not be a run of characters such as 123456789012345 or abcdefghijklmno';
  // a password that is just the user's name, email or the app's name (possibly repeated) is guessed first
  for (const word of contextWords(context)) {
    const bare = word.replace(/[\s\p{P}\d]+/gu, '');
    // `compact` is empty for a password of digits, spaces and punctuation only: nothing of a word in it
    const madeOfWord = compact !== '' && bare.length >= 3 && compact.replaceAll(bare, '') === '';
    if (lower === word || madeOfWord) {
      return 'must not be based on your email address or the name of this service';
    }
  }
  if (new Set(normalized).size === 1) return 'must not be one repeated character';
  return undefined;
}

/** Every character one after (or before) the last, digits wrapping 9 to 0 (`123456789012345`), or the same. */
function isRun(password: string): boolean {
  const codes = [...password].map((char) => char.codePointAt(0) ?? 0);
  const steps = new Set(codes.slice(1).map((code, index) => stepOf(codes[index] ?? 0, code)));
  return steps.size === 1 && !steps.has(undefined);
}

function stepOf(from: number, to: number): number | undefined {
  const isDigit = (code: number) => code >= 48 && code <= 57;
  if (isDigit(from) && isDigit(to))
    return (to - from + 10) % 10 === 1 ? 1 : (from - to + 10) % 10 === 1 ? -1 : undefined;
  return Math.abs(to - from) === 1 ? to - from : undefined;
}
