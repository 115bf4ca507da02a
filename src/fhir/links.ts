import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Keeping the upstream out of answers: its base URL is replaced by the gateway's own, and its
 * paging links by gateway links carrying a signed cursor that is bound to the caller and
 * expires (HAPI #3357: a paging link must not be a way around the scope).
 */

/** How long a paging cursor stays valid. */
export const CURSOR_TTL_SECONDS = 15 * 60;

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

function mac(key: Buffer, body: string): string {
  return createHmac('sha256', key).update(body).digest('base64url');
}

export function signCursor(key: Buffer, payload: CursorPayload): string {
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${body}.${mac(key, body)}`;
}

/** Who may use a cursor, where, for which type, and when: all must match the cursor's own. */
export interface CursorBinding {
  readonly userId: string;
  readonly route: string;
  readonly type: string;
  readonly now: Date;
}

/** The cursor's upstream page, or undefined when it is tampered with, foreign, for another route or type, or expired. */
export function verifyCursor(key: Buffer, token: string, binding: CursorBinding): string | undefined {
  const [body, signature, extra] = token.split('.');
  if (!body || !signature || extra !== undefined || token.length > 4096) return undefined;
  const expected = Buffer.from(mac(key, body));
  const given = Buffer.from(signature);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return undefined;
  try {
    const payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as CursorPayload;
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
  if (absolute.startsWith(`${upstreamBase}?`)) return absolute.slice(upstreamBase.length);
  if (absolute.startsWith(`${upstreamBase}/?`)) return absolute.slice(upstreamBase.length + 1);
  if (absolute.startsWith(`${upstreamBase}/`)) return absolute.slice(upstreamBase.length + 1);
  return undefined;
}

/** A cursor for the upstream link `url`, or undefined when the link is not on our upstream. */
export function cursorForLink(
  key: Buffer,
  binding: CursorBinding,
  url: string,
  upstreamBase: string,
): string | undefined {
  const relative = relativeToBase(url, upstreamBase);
  if (relative === undefined) return undefined;
  const expires = Math.floor(binding.now.getTime() / 1000) + CURSOR_TTL_SECONDS;
  return signCursor(key, { u: binding.userId, p: relative, r: binding.route, t: binding.type, e: expires });
}

/** Replaces every occurrence of the upstream base URL with the gateway's public FHIR base. */
export function replaceUpstreamBase(text: string, upstreamBase: string, publicFhirBase: string): string {
  return text.includes(upstreamBase) ? text.replaceAll(upstreamBase, publicFhirBase) : text;
}
