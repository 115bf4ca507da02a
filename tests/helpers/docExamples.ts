/**
 * Reads the request/response examples out of a markdown guide so a test can run them, in
 * document order, against a real gateway: docs/auth_integration.md cannot drift from the code.
 *
 * What the parser understands (the guide states the same conventions for its readers):
 * - a ```http block starting `METHOD /path` is a request: headers, a blank line, a JSON body;
 * - its answer is either a ```json block after a line saying "Response `201 Created`", or a
 *   ```http block starting `HTTP/1.1 201 Created` (headers, blank line, optional JSON body), or,
 *   for an answer without a body, just the sentence "Response `204 No Content`";
 * - `<!-- doc-example key=value ... -->` right before a block adjusts it:
 *   `repeat=N` sends the request N times and checks the last answer (rate limits);
 *   `subset` lets the real answer carry keys and items the example leaves out;
 *   `claims=patient` checks a ```json block against the decoded claims of that role's token;
 *   `mail=ann@example.com` checks a ```text block (`Subject: ...`, blank line, text part)
 *   against the newest mail to that address.
 * Any other ```http or ```json block is an error: every example is executed or checked.
 */

export interface DocRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: string | undefined;
}

export interface DocResponse {
  readonly status: number;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly json: unknown;
  readonly hasBody: boolean;
}

export type DocStep =
  | {
      readonly kind: 'request';
      readonly line: number;
      readonly request: DocRequest;
      readonly response: DocResponse;
      readonly repeat: number;
      readonly subset: boolean;
    }
  | { readonly kind: 'claims'; readonly line: number; readonly role: string; readonly json: unknown }
  | { readonly kind: 'mail'; readonly line: number; readonly to: string; readonly text: string };

interface Fence {
  readonly lang: string;
  readonly line: number;
  readonly content: string;
  /** The markdown between the previous fence (or the start) and this one. */
  readonly before: string;
  /** The markdown between this fence and the next one (or the end). */
  after: string;
}

function fences(markdown: string): Fence[] {
  const lines = markdown.split('\n');
  const found: Fence[] = [];
  let prose: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\S*)\s*$/.exec(lines[i]!);
    if (!open) {
      prose.push(lines[i]!);
      continue;
    }
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    if (i >= lines.length) throw new Error(`line ${start + 1}: code block is not closed`);
    const previous = found.at(-1);
    if (previous) previous.after = prose.join('\n');
    found.push({
      lang: open[1] ?? '',
      line: start + 1,
      content: body.join('\n'),
      before: prose.join('\n'),
      after: '',
    });
    prose = [];
  }
  const last = found.at(-1);
  if (last) last.after = prose.join('\n');
  return found;
}

/** `<!-- doc-example repeat=4 subset -->` -> {repeat: '4', subset: 'true'}; the last comment before the block. */
function directive(prose: string): Record<string, string> {
  const comments = [...prose.matchAll(/<!--\s*doc-example\s+([^>]*?)\s*-->/g)];
  const last = comments.at(-1);
  if (!last) return {};
  const result: Record<string, string> = {};
  for (const part of (last[1] ?? '').split(/\s+/).filter(Boolean)) {
    const [key, value] = part.split('=', 2);
    result[key!] = value ?? 'true';
  }
  return result;
}

function parseJson(text: string, line: number): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`line ${line}: the JSON example does not parse: ${(error as Error).message}`);
  }
}

function headerLines(lines: string[], line: number): Array<[string, string]> {
  return lines.map((l) => {
    const match = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(l);
    if (!match) throw new Error(`line ${line}: "${l}" is not a header line`);
    return [match[1]!, match[2]!];
  });
}

function splitHead(content: string): { head: string[]; body: string | undefined } {
  const lines = content.split('\n');
  const blank = lines.findIndex((l) => l.trim() === '');
  if (blank === -1) return { head: lines, body: undefined };
  const body = lines
    .slice(blank + 1)
    .join('\n')
    .trim();
  return { head: lines.slice(0, blank), body: body === '' ? undefined : body };
}

function parseRequest(fence: Fence): DocRequest {
  const { head, body } = splitHead(fence.content);
  const [first, ...rest] = head;
  const match = /^([A-Z]+) (\/\S*)$/.exec(first ?? '');
  if (!match) throw new Error(`line ${fence.line}: a request starts with "METHOD /path"`);
  return { method: match[1]!, path: match[2]!, headers: headerLines(rest, fence.line), body };
}

function parseHttpResponse(fence: Fence): DocResponse {
  const { head, body } = splitHead(fence.content);
  const [first, ...rest] = head;
  const match = /^HTTP\/1\.1 (\d{3})\b/.exec(first ?? '');
  if (!match) throw new Error(`line ${fence.line}: a response starts with "HTTP/1.1 <status>"`);
  return {
    status: Number(match[1]),
    headers: headerLines(rest, fence.line),
    json: body === undefined ? undefined : parseJson(body, fence.line),
    hasBody: body !== undefined,
  };
}

const RESPONSE_SENTENCE = /Response `(\d{3})[^`]*`/;

/** Every example of the guide, in document order. Throws on a block that is neither executed nor checked. */
export function parseDocExamples(markdown: string): DocStep[] {
  const all = fences(markdown);
  const steps: DocStep[] = [];
  for (let i = 0; i < all.length; i++) {
    const fence = all[i]!;
    let options = directive(fence.before);
    if (fence.lang === 'http') {
      if (/^HTTP\//.test(fence.content)) {
        throw new Error(`line ${fence.line}: a response block must follow its request block`);
      }
      const request = parseRequest(fence);
      const next = all[i + 1];
      // a directive may also sit between the request and its answer block
      if (next && (next.lang === 'json' || /^HTTP\//.test(next.content))) {
        options = { ...options, ...directive(next.before) };
      }
      let response: DocResponse;
      if (next?.lang === 'http' && /^HTTP\//.test(next.content) && !/\S/.test(stripComments(fence.after))) {
        response = parseHttpResponse(next);
        i++;
      } else {
        const status = RESPONSE_SENTENCE.exec(fence.after);
        if (!status) {
          throw new Error(
            `line ${fence.line}: ${request.method} ${request.path} has no answer: add "Response \`200 OK\`:" and a json block, or an HTTP/1.1 block`,
          );
        }
        if (next?.lang === 'json') {
          response = {
            status: Number(status[1]),
            headers: [],
            json: parseJson(next.content, next.line),
            hasBody: true,
          };
          i++;
        } else {
          response = { status: Number(status[1]), headers: [], json: undefined, hasBody: false };
        }
      }
      steps.push({
        kind: 'request',
        line: fence.line,
        request,
        response,
        repeat: options.repeat ? Number(options.repeat) : 1,
        subset: options.subset === 'true',
      });
    } else if (fence.lang === 'json') {
      if (!options.claims) {
        throw new Error(
          `line ${fence.line}: a json block must answer the request block before it ("Response \`200 OK\`:") or carry <!-- doc-example claims=<role> -->`,
        );
      }
      steps.push({
        kind: 'claims',
        line: fence.line,
        role: options.claims,
        json: parseJson(fence.content, fence.line),
      });
    } else if (fence.lang === 'text' && options.mail) {
      steps.push({ kind: 'mail', line: fence.line, to: options.mail, text: fence.content });
    }
  }
  return steps;
}

function stripComments(prose: string): string {
  return prose.replace(/<!--[\s\S]*?-->/g, '');
}

// ---------------------------------------------------------------------------------------------
// Comparing a documented answer with the real one

/** Keys whose values are generated (ids, tokens, times): only their type is compared. */
const VARIABLE_KEYS = new Set([
  'token',
  'refresh_token',
  'next_cursor',
  'access_code',
  'iat',
  'exp',
  'kid',
  'x',
  'y',
  'sub',
  'sid',
  'jti',
  'lastUpdated',
  'client_ip',
]);
/** Ids: the first time a documented id is seen it is bound to the real one; later uses must agree. */
const isIdKey = (key: string) => /^id$|_id$|Id$/.test(key) || key === 'sub' || key === 'sid' || key === 'jti';
/** Values that later requests reuse although they change (a refresh token is replaced by the next). */
const REBINDABLE_KEYS = new Set(['token', 'refresh_token', 'next_cursor']);
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const ELLIPSIS = /…|\.\.\./;

export interface Bindings {
  /** Documented literal -> the real value it stands for in this run. */
  readonly values: Map<string, string>;
}

export function createBindings(): Bindings {
  return { values: new Map() };
}

/** Replaces every bound documented literal in `text` (longest first, so ids never clash with prefixes). */
export function substitute(bindings: Bindings, text: string): string {
  const literals = [...bindings.values.keys()].sort((a, b) => b.length - a.length);
  let result = text;
  for (const literal of literals) result = result.split(literal).join(bindings.values.get(literal)!);
  return result;
}

const describeType = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

/**
 * Checks that `real` has the documented shape: every documented key exists with the same
 * type (and, unless `subset`, no undocumented key), arrays have the documented items, stable
 * values are equal, generated ones are bound for later steps. Returns the mismatches.
 */
export function compareJson(
  documented: unknown,
  real: unknown,
  bindings: Bindings,
  options: { subset?: boolean } = {},
): string[] {
  const problems: string[] = [];
  const walk = (doc: unknown, act: unknown, path: string, key: string) => {
    const where = path || '(body)';
    if (describeType(doc) !== describeType(act)) {
      problems.push(
        `${where}: documented ${describeType(doc)} ${JSON.stringify(doc)}, got ${describeType(act)} ${JSON.stringify(act)}`,
      );
      return;
    }
    if (Array.isArray(doc)) {
      const items = act as unknown[];
      if (options.subset ? items.length < doc.length : items.length !== doc.length) {
        problems.push(`${where}: documented ${doc.length} item(s), got ${items.length}`);
      }
      doc.forEach((item, i) => {
        if (i < items.length) walk(item, items[i], `${path}[${i}]`, key);
      });
      return;
    }
    if (doc !== null && typeof doc === 'object') {
      const actual = act as Record<string, unknown>;
      for (const [k, v] of Object.entries(doc)) {
        if (!(k in actual))
          problems.push(`${path ? `${path}.` : ''}${k}: documented but missing in the response`);
        else walk(v, actual[k], path ? `${path}.${k}` : k, k);
      }
      if (!options.subset) {
        for (const k of Object.keys(actual)) {
          if (!(k in (doc as Record<string, unknown>))) {
            problems.push(
              `${path ? `${path}.` : ''}${k}: in the response but not in the example (${JSON.stringify(actual[k])})`,
            );
          }
        }
      }
      return;
    }
    if (typeof doc === 'string') {
      const actual = act as string;
      const variable =
        VARIABLE_KEYS.has(key) ||
        isIdKey(key) ||
        key.endsWith('_at') ||
        ISO_TIME.test(doc) ||
        ELLIPSIS.test(doc);
      if (!variable) {
        const expected = substitute(bindings, doc);
        if (expected !== actual)
          problems.push(`${where}: documented ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
        return;
      }
      if (ELLIPSIS.test(doc)) return;
      if (isIdKey(key) && !REBINDABLE_KEYS.has(key)) {
        const bound = bindings.values.get(doc);
        if (bound !== undefined && bound !== actual) {
          problems.push(
            `${where}: the example reuses ${doc}, which stood for ${bound} earlier, but got ${actual}`,
          );
          return;
        }
        if (bound === undefined) bindings.values.set(doc, actual);
      } else if (REBINDABLE_KEYS.has(key)) {
        bindings.values.set(doc, actual);
      }
      return;
    }
    if (typeof doc === 'number' && VARIABLE_KEYS.has(key)) return;
    if (doc !== act) problems.push(`${where}: documented ${JSON.stringify(doc)}, got ${JSON.stringify(act)}`);
  };
  walk(documented, real, '', '');
  return problems;
}

/** Headers whose values differ on every call; only their presence (and form) is checked. */
const VARIABLE_HEADERS: Record<string, RegExp> = {
  date: /./,
  'x-request-id': /./,
  'content-length': /^\d+$/,
  'retry-after': /^\d+$/,
};

export function compareHeaders(
  documented: ReadonlyArray<readonly [string, string]>,
  real: Headers,
  bindings: Bindings,
): string[] {
  const problems: string[] = [];
  for (const [name, value] of documented) {
    const actual = real.get(name);
    if (actual === null) {
      problems.push(`header ${name}: documented but missing`);
      continue;
    }
    const form = VARIABLE_HEADERS[name.toLowerCase()];
    if (form) {
      if (!form.test(actual)) problems.push(`header ${name}: got ${JSON.stringify(actual)}`);
      continue;
    }
    if (ELLIPSIS.test(value)) continue;
    const expected = substitute(bindings, value);
    if (expected !== actual) {
      problems.push(`header ${name}: documented ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
    }
  }
  return problems;
}

const CODE = /\b[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}\b/g;
const UTC_TIME = /\b\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\b/g;

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A documented mail text as a pattern: the code and the expiry time vary, every other character must match. */
export function mailPattern(documented: string): RegExp {
  const text = documented.trim();
  const variable = new RegExp(`(${CODE.source})|(${UTC_TIME.source})`, 'g');
  let source = '';
  let last = 0;
  for (const match of text.matchAll(variable)) {
    source += escapeRegExp(text.slice(last, match.index)) + (match[1] ? CODE.source : UTC_TIME.source);
    last = match.index + match[0].length;
  }
  return new RegExp(`^${source}${escapeRegExp(text.slice(last))}$`);
}

export const CODE_IN_TEXT = new RegExp(CODE.source);
