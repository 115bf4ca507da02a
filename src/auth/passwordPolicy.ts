import { createRequire } from 'node:module';
import { normalizePassword, PASSWORD_MAX_LENGTH, passwordLength, passwordTooLong } from './passwords.js';

/**
 * The one password policy, used wherever a password is chosen (signup, reset, first admin).
 * NIST SP 800-63B-4: a long minimum for a single-factor password (default 15), at most 128
 * accepted, no composition rules, Unicode allowed (NFKC), refuse common and context passwords.
 */

let commonPasswords: ReadonlySet<string> | undefined;

/**
 * ~49k passwords most often seen in breaches, shipped in @zxcvbn-ts/language-common: loaded on
 * the first password chosen, not at start (decompressing them took ~100 ms of every start-up).
 */
function common(): ReadonlySet<string> {
  if (!commonPasswords) {
    const { dictionary } = createRequire(import.meta.url)('@zxcvbn-ts/language-common') as {
      dictionary: Record<'passwords-common', string[]>;
    };
    commonPasswords = new Set(dictionary['passwords-common'].map((p) => p.toLowerCase()));
  }
  return commonPasswords;
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
  if (common().has(lower)) return 'is too common: it appears in lists of breached passwords';
  // a password that is just the user's name, email or the app's name (possibly repeated) is guessed first
  const compact = lower.replace(/[\s\p{P}\d]+/gu, '');
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
