import { describe, expect, it } from 'vitest';
import { isPlainLine } from '../../src/http/schemas.js';

/** What a one-line text field (names, addresses, identifiers) accepts: readable as stored. */
describe('isPlainLine', () => {
  it.each([
    ['a plain name', 'Ann Lee', true],
    ['accents and other scripts', 'José Ñúñez 李小龍 محمد', true],
    ['a joiner inside a Persian name', 'می\u200cخواهم', true],
    ['an emoji sequence with a joiner', 'Ann 👩\u200d⚕️', true],
    ['a left-to-right mark', 'Ann\u200e Lee', true],
    ['a tab', 'Ann\tLee', false],
    ['a line break', 'Ann\nLee', false],
    ['NUL', 'Ann\u0000', false],
    ['a C1 control', 'Ann\u0085Lee', false],
    ['a line separator', 'Ann\u2028Lee', false],
    ['a paragraph separator', 'Ann\u2029Lee', false],
    ['a right-to-left override', '\u202eeeL nnA', false],
    ['a right-to-left isolate', 'Ann \u2067Lee', false],
    ['a lone high surrogate', 'Ann \ud800', false],
    ['a lone low surrogate', '\udc00Ann', false],
    ['the replacement character (a body not in UTF-8)', 'Ren\ufffd', false],
    ['only a zero-width space', '\u200b', false],
    ['only a soft hyphen and a BOM', '\u00ad\ufeff', false],
    ['only spaces', '   ', false],
  ])('%s: %s', (_what, value, plain) => {
    expect(isPlainLine(value)).toBe(plain);
  });
});
