/**
 * Whether a query string or a urlencoded form is well-formed (RFC 3986 section 2.1: every `%`
 * followed by two hex digits) and UTF-8 once decoded. URLSearchParams and Hono turn what is not
 * into U+FFFD silently.
 */
export function isWellFormedQuery(text: string): boolean {
  if (!text.includes('%')) return true;
  try {
    decodeURIComponent(text);
    return true;
  } catch {
    return false;
  }
}
