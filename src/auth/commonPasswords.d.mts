export const COMMON_PASSWORDS_FILE: string;

export function writeCommonPasswords(file: string): void;

/** The saved list: each password with `\n` before and after it. */
export function savedCommonPasswords(file: string): string | undefined;

/** The saved list, else the package's, in the same form. */
export function commonPasswords(file: string): string;
