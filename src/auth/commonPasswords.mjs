// The breached-password list of the password policy (src/auth/passwordPolicy.ts), as the build
// saves it: @zxcvbn-ts/language-common ships it compressed, and decompressing it took ~20 ms of the
// first password chosen in every process (the first admin's at start, a worker's first signup),
// with the event loop blocked. Saved lowercased, once each and one per line, under a stamp of the
// package's version; read back whole in ~2 ms. Plain JS: the build runs before any TypeScript loader.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { installedVersion } from '../installedVersion.mjs';

const PACKAGE = '@zxcvbn-ts/language-common';

/** Where the build saves the list, from the project's root. */
export const COMMON_PASSWORDS_FILE = 'dist/common-passwords.txt';

/** How the saved list is laid out: raised when that changes, so a build remakes an older one. */
const LAYOUT = 2;

/** The saved list's last line: a copy cut short (a partial copy, a crash before the data reached the disk) lacks it. */
const END = '# end of the list\n';

/** The first line of the saved list: its layout, and the package and version it was made from. */
const stamp = () => `# common passwords, layout ${LAYOUT}, from ${PACKAGE}@${installedVersion(PACKAGE)}`;

/** The package's list (~49k passwords), lowercased, each once, one per line, with a newline before and after each. */
function packagedList() {
  const { dictionary } = createRequire(import.meta.url)(PACKAGE);
  const words = [...new Set(dictionary['passwords-common'].map((p) => p.toLowerCase()))].sort();
  return `\n${words.join('\n')}\n`;
}

/** Saves the package's list to `file` (written aside and renamed: a reader never sees half of it). */
export function writeCommonPasswords(file) {
  const aside = `${file}.${process.pid}`;
  fs.writeFileSync(aside, `${stamp()}${packagedList()}${END}`);
  fs.renameSync(aside, file);
}

/**
 * The list saved in `file`, or undefined when there is none, it was made from another version of
 * the package or in another layout, or it is cut short: the policy then falls back to the package,
 * never to fewer passwords.
 */
export function savedCommonPasswords(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const lineEnd = text.indexOf('\n');
  if (lineEnd < 0 || text.slice(0, lineEnd) !== stamp() || !text.endsWith(END)) return undefined;
  return text.slice(lineEnd, text.length - END.length);
}

/** The list as one string, `\n` before and after each password: the saved one, else the package's (~40 ms). */
export function commonPasswords(file) {
  return savedCommonPasswords(file) ?? packagedList();
}
