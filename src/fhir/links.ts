import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { type SecretKey, seal, unsealBytes } from '../secrets.js';

/**
 * Keeping the upstream out of answers: its base URL is replaced by the gateway's own, and its
 * paging links by gateway links carrying a sealed cursor that is bound to the caller and
 * expires (HAPI #3357: a paging link must not be a way around the scope).
 */

/** How long a paging cursor stays valid. */
const CURSOR_TTL_SECONDS = 15 * 60;

export interface CursorPayload {
  /** The caller it was issued to. */
  readonly u: string;
  /** The upstream page to fetch: a path and query relative to the upstream base, never a URL. */
  readonly p: string;
  /** Where it was issued: `fhir` (passthrough) or a slim route name; a cursor works only there. */
  readonly r: string;
  /** The resource type searched ('' for a whole-server search): a cursor pages only that type. */
  readonly t: string;
  /** Expiry, seconds since the epoch. */
  readonly e: number;
}

/**
 * Sealed (AES-256-GCM) with the current cursor key: the client can neither change a cursor nor
 * read it. A signature alone left the payload readable, and it holds the upstream's paging scheme
 * (HAPI's `?_getpages=`) and the narrowed query with the patient's id: server details that never
 * reach the slim API (DESIGN.md section 3).
 */
export function sealCursor(key: SecretKey, payload: CursorPayload): string {
  const json = JSON.stringify(payload);
  if (json.length <= COMPRESS_ABOVE) return seal(key, json);
  // a long search's next link (its query percent-encoded again, and narrowed) made a cursor past
  // the 4 KiB a request may carry: the page it names could not be asked for (414)
  return seal(key, Buffer.concat([COMPRESSED, deflateRawSync(json)]));
}

/** Payloads longer than this are compressed (a short one, every page's usual, costs no deflate). */
const COMPRESS_ABOVE = 512;
/** The first byte of a compressed payload: JSON text never begins with it. */
const COMPRESSED = Buffer.from([0]);
const MAX_PAYLOAD_BYTES = 64 * 1024;

/** A sealed cursor's JSON, inflated when it was compressed (its GCM tag was checked first: only we made it). */
function cursorJson(key: SecretKey, token: string): string {
  const bytes = unsealBytes(key, token);
  if (bytes[0] !== COMPRESSED[0]) return bytes.toString('utf8');
  return inflateRawSync(bytes.subarray(1), { maxOutputLength: MAX_PAYLOAD_BYTES }).toString('utf8');
}

/** Who may use a cursor, where, for which type, and when: all must match the cursor's own. */
export interface CursorBinding {
  readonly userId: string;
  readonly route: string;
  readonly type: string;
  readonly now: Date;
}

/** The cursor's upstream page, or undefined when it is tampered with, foreign, for another route or type, or expired. */
export function verifyCursor(key: SecretKey, token: string, binding: CursorBinding): string | undefined {
  if (token.length > 4096) return undefined;
  try {
    // GCM's tag refuses a changed cursor, or one sealed under a key that is no longer in the ring
    const payload = JSON.parse(cursorJson(key, token)) as CursorPayload;
    const { userId, route, type, now } = binding;
    if (payload.u !== userId || payload.r !== route || payload.t !== type || payload.e < now.getTime() / 1000)
      return undefined;
    return typeof payload.p === 'string' ? payload.p : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The part of an upstream link after its base (`Observation?subject=...&_offset=20`, or
 * `?_getpages=...` for servers that page at the base, as HAPI does), or undefined when the link
 * points anywhere else: links are followed only on our own upstream. Relative links are
 * resolved against the base first, as a browser would.
 */
export function relativeToBase(url: string, upstreamBase: string): string | undefined {
  let absolute = url;
  if (!/^[a-z][a-z0-9+.-]*:/i.test(url)) {
    try {
      absolute = new URL(url, `${upstreamBase}/`).toString();
    } catch {
      return undefined;
    }
  }
  if (absolute === upstreamBase || absolute === `${upstreamBase}/`) return '';
  let relative: string | undefined;
  if (absolute.startsWith(`${upstreamBase}?`)) relative = absolute.slice(upstreamBase.length);
  else if (absolute.startsWith(`${upstreamBase}/?`)) relative = absolute.slice(upstreamBase.length + 1);
  else if (absolute.startsWith(`${upstreamBase}/`)) relative = absolute.slice(upstreamBase.length + 1);
  return relative !== undefined && isPlainPath(relative) ? relative : undefined;
}

/**
 * Whether the path of a relative link (before its query) is plain: letters, digits, `-._$/`, no
 * `.` or `..` segment. `…/fhir/../admin` starts with the base yet leaves it (review S1).
 */
export function isPlainPath(relative: string): boolean {
  const end = relative.indexOf('?');
  const path = end < 0 ? relative : relative.slice(0, end);
  return /^[A-Za-z0-9\-._$/]*$/.test(path) && !path.split('/').some((s) => s === '.' || s === '..');
}

/** Where a link points, for an operator's log: origin and path, never the query (it holds search values). */
export function whereLinkGoes(url: string): string {
  try {
    const { origin, pathname } = new URL(url);
    return `${origin}${pathname}`;
  } catch {
    return 'not a URL';
  }
}

/** A cursor for the upstream link `url`, or undefined when the link is not on our upstream. */
export function cursorForLink(
  key: SecretKey,
  binding: CursorBinding,
  url: string,
  upstreamBase: string,
): string | undefined {
  const relative = relativeToBase(url, upstreamBase);
  // the bare base is no page (HAPI names it as a batch answer's `self`): a cursor to it could only fail
  if (!relative) return undefined;
  const expires = Math.floor(binding.now.getTime() / 1000) + CURSOR_TTL_SECONDS;
  return sealCursor(key, { u: binding.userId, p: relative, r: binding.route, t: binding.type, e: expires });
}

/** The gateway's link to the page a cursor holds, where it is used: the searched type, a `_history`, or the base (''). */
export function cursorUrl(publicFhirBase: string, path: string, cursor: string): string {
  return `${path ? `${publicFhirBase}/${path}` : publicFhirBase}?_cursor=${cursor}`;
}

/** Replaces every occurrence of the upstream base URL with the gateway's public FHIR base. */
export function replaceUpstreamBase(text: string, upstreamBase: string, publicFhirBase: string): string {
  return text.includes(upstreamBase) ? text.replaceAll(upstreamBase, publicFhirBase) : text;
}

/**
 * Where a top-level member of a JSON object text sits: from its key's opening quote to the end
 * of its value. Only the first `limit` characters are scanned (the members before a Bundle's
 * entries), so the cost does not grow with the entries. Undefined when the key is not there.
 * `from`: the end of an earlier top-level member, to look for another after it.
 */
function topLevelMember(
  text: string,
  key: string,
  limit: number,
  from = 0,
): { start: number; end: number } | undefined {
  const wanted = `"${key}"`;
  // past a member of the outer object, the scan is inside it
  let depth = from === 0 ? 0 : 1;
  let i = from;
  while (i < limit) {
    const ch = text.charCodeAt(i);
    if (ch === 0x22 /* " */) {
      const close = stringEnd(text, i);
      if (depth === 1 && text.startsWith(wanted, i) && close === i + wanted.length - 1) {
        let j = close + 1;
        while (isSpace(text.charCodeAt(j))) j++;
        if (text.charCodeAt(j) === 0x3a /* : */) return { start: i, end: valueEnd(text, j + 1) };
      }
      i = close + 1;
      continue;
    }
    if (ch === 0x7b || ch === 0x5b) depth++;
    else if (ch === 0x7d || ch === 0x5d) depth--;
    i++;
  }
  return undefined;
}

function isSpace(ch: number): boolean {
  return ch === 0x20 || ch === 0x0a || ch === 0x0d || ch === 0x09;
}

/** Index of the closing quote of the string that opens at `start`. */
function stringEnd(text: string, start: number): number {
  let i = start + 1;
  for (;;) {
    const close = text.indexOf('"', i);
    if (close < 0) return text.length;
    let backslashes = 0;
    for (let k = close - 1; text.charCodeAt(k) === 0x5c; k--) backslashes++;
    if (backslashes % 2 === 0) return close;
    i = close + 1;
  }
}

/** Index just past the JSON value that starts at or after `from`. */
function valueEnd(text: string, from: number): number {
  let i = from;
  while (isSpace(text.charCodeAt(i))) i++;
  let depth = 0;
  for (; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 0x22) {
      i = stringEnd(text, i);
      if (depth === 0) return i + 1;
    } else if (ch === 0x7b || ch === 0x5b) depth++;
    else if (ch === 0x7d || ch === 0x5d) {
      depth--;
      if (depth === 0) return i + 1;
    } else if (depth === 0 && (ch === 0x2c || isSpace(ch))) return i;
  }
  return i;
}

/**
 * A searchset Bundle's text as the upstream sent it, with its top-level `link` replaced by the
 * gateway's links (or removed when there are none): relaying the text saves parsing and
 * serialising it again when the response check kept every entry. Undefined when the text does
 * not have the expected shape, or its `link` comes after the entries where the scan does not
 * look (`upstreamLinked`: the parsed Bundle has one): the caller then serialises the Bundle.
 */
export function withLinks(
  text: string,
  links: readonly { relation: string; url: string }[],
  upstreamLinked: boolean,
): string | undefined {
  // security: with two "entry" members the text holds entries the check never read (JSON.parse
  // keeps the last, a client's parser may keep the first): what was checked is serialised instead
  const entries = soleEntryWord(text);
  if (entries === undefined) return undefined;
  const limit = entries < 0 ? text.length : entries;
  const member = topLevelMember(text, 'link', limit);
  const replacement = links.length > 0 ? `"link":${JSON.stringify(links)}` : '';
  if (member) {
    // security: a second top-level "link" (JSON.parse keeps the last, the one our links came from)
    // would reach the client as the upstream sent it: its address and the narrowed query
    if (nextWord(text, 'link', member.end) >= 0 && topLevelMember(text, 'link', text.length, member.end))
      return undefined;
    return replaceMember(text, member, replacement);
  }
  // the upstream has links, but after its entries (member order is free in JSON): they would be
  // relayed as they are, the narrowed query and the upstream's paging scheme with them
  if (upstreamLinked) return undefined;
  if (!replacement) return text;
  // no links upstream but ours: after the opening brace
  const open = text.indexOf('{');
  return open < 0 ? undefined : `${text.slice(0, open + 1)}${replacement},${text.slice(open + 1)}`;
}

/**
 * Where the next `"word"` starts at or after `from`, or -1. Found by its tail (`ntry"`): `"` opens
 * every string of a JSON text and `e` is as common, so `indexOf('"entry"')` took ~7 µs over 14 KB
 * of a Bundle, this ~2 µs.
 */
function nextWord(text: string, word: 'entry' | 'link', from: number): number {
  const tail = word === 'entry' ? 'ntry"' : 'ink"';
  const head = word.charCodeAt(0);
  for (let i = text.indexOf(tail, from); i >= 0; i = text.indexOf(tail, i + tail.length))
    if (text.charCodeAt(i - 1) === head && text.charCodeAt(i - 2) === 0x22 /* " */) return i - 2;
  return -1;
}

/**
 * Where the first `"entry"` of a Bundle text starts (-1: none), or undefined when the text may have
 * `entry` as a top-level member twice. JSON.parse keeps the last of two, which is what the
 * response check reads, while the splices here edit the first. The word found once (the common
 * case) needs no scan; twice (a List's or a nested Bundle's `entry`, or a duplicate) the text's
 * top level is scanned for a second member. A text with a `\u` escape anywhere is not relayed
 * at all (a key can be spelled with them).
 */
function soleEntryWord(text: string): number | undefined {
  // a key spelled with escapes (`"\u0065ntry"`) is an "entry" to JSON.parse that no scan here sees
  if (text.includes('\\u')) return undefined;
  const first = nextWord(text, 'entry', 0);
  if (first < 0 || nextWord(text, 'entry', first + 7) < 0) return first;
  const member = topLevelMember(text, 'entry', text.length);
  return member && topLevelMember(text, 'entry', text.length, member.end) ? undefined : first;
}

/** The text with a member replaced, or dropped with one comma next to it when `replacement` is ''. */
function replaceMember(
  text: string,
  member: { start: number; end: number },
  replacement: string,
): string | undefined {
  if (replacement) return text.slice(0, member.start) + replacement + text.slice(member.end);
  let before = member.start;
  while (before > 0 && isSpace(text.charCodeAt(before - 1))) before--;
  let after = member.end;
  while (isSpace(text.charCodeAt(after))) after++;
  if (text.charCodeAt(after) === 0x2c) return text.slice(0, member.start) + text.slice(after + 1);
  if (text.charCodeAt(before - 1) === 0x2c) return text.slice(0, before - 1) + text.slice(member.end);
  return undefined;
}

/** Where each element of the JSON array that starts at or after `from` sits; undefined if it is not an array. */
function arrayElements(text: string, from: number): { start: number; end: number }[] | undefined {
  let i = from;
  while (isSpace(text.charCodeAt(i))) i++;
  if (text.charCodeAt(i) !== 0x5b /* [ */) return undefined;
  const elements: { start: number; end: number }[] = [];
  i++;
  for (;;) {
    while (isSpace(text.charCodeAt(i))) i++;
    if (text.charCodeAt(i) === 0x5d /* ] */ && elements.length === 0) return elements;
    const end = valueEnd(text, i);
    if (end <= i) return undefined;
    elements.push({ start: i, end });
    i = end;
    while (isSpace(text.charCodeAt(i))) i++;
    const ch = text.charCodeAt(i);
    if (ch === 0x5d) return elements;
    if (ch !== 0x2c /* , */) return undefined;
    i++;
  }
}

/**
 * A Bundle's text as the upstream sent it, with only the entries `kept` (one flag per entry, in
 * order) and, when `dropTotal`, without its `total`: the response check's removals made without
 * serialising the rest again. A serialised Bundle differs from the upstream's text (`1.50`
 * becomes `1.5`): that difference would tell that something outside the scope was removed, and
 * it changes the decimals FHIR says to keep as sent. Undefined when the text does not have the
 * expected shape (the caller then serialises the Bundle).
 */
export function withEntriesKept(
  text: string,
  kept: readonly boolean[],
  dropTotal: boolean,
): string | undefined {
  // security: as in withLinks, the "entry" the check read may be another than the one spliced here
  if (soleEntryWord(text) === undefined) return undefined;
  const member = topLevelMember(text, 'entry', text.length);
  if (!member) return undefined;
  const colon = text.indexOf(':', member.start + '"entry"'.length);
  const elements = arrayElements(text, colon + 1);
  if (!elements || elements.length !== kept.length) return undefined;
  const slices = elements.filter((_, i) => kept[i]).map((e) => text.slice(e.start, e.end));
  // FHIR JSON has no empty arrays: with no entry left, the member goes
  const spliced = replaceMember(text, member, slices.length > 0 ? `"entry":[${slices.join(',')}]` : '');
  if (spliced === undefined || !dropTotal) return spliced;
  const total = topLevelMember(spliced, 'total', spliced.length);
  if (!total) return spliced;
  const dropped = replaceMember(spliced, total, '');
  // a second "total" would still tell how many matches there were before the removals
  return dropped === undefined || topLevelMember(dropped, 'total', dropped.length) ? undefined : dropped;
}
