/**
 * What a JSON Patch (RFC 6902) may not touch through either FHIR server: the record itself, its
 * `id` or its `resourceType`. Read by the gateway's admin write check (adminWrites.ts) and by the
 * embedded engine, which stored a patched copy under whatever id it ended with.
 */

/** Tokens the embedded engine's patcher (rfc6902) steps over: `/__proto__/id` reached `/id`. */
const SKIPPED_TOKENS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Whether a JSON Pointer (RFC 6901) names the whole resource, its id or its type, or holds a
 * token no FHIR element has that a patcher may skip (so it could reach either).
 */
export function pointerRenames(pointer: unknown): boolean {
  if (typeof pointer !== 'string') return false;
  if (pointer === '') return true;
  const tokens = pointer
    .split('/')
    .slice(1)
    .map((t) => t.replaceAll('~1', '/').replaceAll('~0', '~'));
  if (tokens.some((t) => SKIPPED_TOKENS.has(t))) return true;
  return tokens[0] === 'id' || tokens[0] === 'resourceType';
}

/** Whether any operation of a JSON Patch renames the record (its `path`, or the `from` of a move or copy). */
export function jsonPatchRenames(operations: readonly unknown[]): boolean {
  return operations.some((op) => {
    const { path, from } = (op ?? {}) as { path?: unknown; from?: unknown };
    return pointerRenames(path) || pointerRenames(from);
  });
}
