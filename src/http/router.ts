import { OpenAPIHono } from '@hono/zod-openapi';
import type { ZodError } from 'zod';
import { AppError, type FieldError } from '../errors.js';
import type { AppEnv } from './types.js';

type Issue = ZodError['issues'][number];

const TYPE_WORDS: Readonly<Record<string, string>> = {
  number: 'a number',
  int: 'a whole number',
  string: 'a text',
  array: 'a list',
  object: 'an object',
  boolean: 'true or false',
};

const FORMAT_WORDS: Readonly<Record<string, string>> = {
  datetime: 'an ISO 8601 date-time with a time zone, such as 2026-11-20T09:30:00Z or +01:00',
  date: 'a date, YYYY-MM-DD',
  email: 'an email address',
  url: 'a URL',
};

function sizeOf(origin: unknown, bound: unknown, most: boolean): string {
  const word = most ? 'at most' : 'at least';
  if (origin === 'string')
    return bound === 1 && !most ? 'must not be empty' : `must be ${word} ${bound} characters`;
  if (origin === 'array' || origin === 'set')
    return `must have ${word} ${bound} item${bound === 1 ? '' : 's'}`;
  return `must be ${word} ${bound}`;
}

/**
 * What to fix, in the guide's words: zod's own wording (`Too small: expected string to have >=1
 * characters`, `Invalid input`) becomes ours (`must not be empty`); a schema's own message, which
 * starts in lower case (`must be YYYY-MM-DD ...`), stays.
 */
function plainMessage(issue: Issue): string {
  if (!/^[A-Z]/.test(issue.message)) return issue.message;
  switch (issue.code) {
    case 'invalid_type':
      if (issue.message.endsWith('received undefined')) return 'is required';
      return `must be ${TYPE_WORDS[issue.expected] ?? issue.expected}`;
    case 'too_small':
      return sizeOf(issue.origin, issue.minimum, false);
    case 'too_big':
      return sizeOf(issue.origin, issue.maximum, true);
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_format':
      return `must be ${FORMAT_WORDS[issue.format] ?? `a valid ${issue.format}`}`;
    default:
      return 'is not valid';
  }
}

/** A union's branch for a value of another type: what it says (`must be text`) does not apply. */
const wrongType = (branch: readonly Issue[]): boolean =>
  branch.some(
    (i) =>
      i.path.length === 0 &&
      (i.code === 'invalid_type' || (i.code === 'invalid_union' && i.errors.every(wrongType))),
  );

/**
 * The issue that says what to fix. For a union without a message of its own, the branch of the
 * value's type does, at its own path under the union's (review S3: `identifier` "is required"
 * where `identifier.value` was missing; 11 qualifications "is not valid").
 */
function leafOf(issue: Issue): Issue {
  if (issue.code !== 'invalid_union' || !/^[A-Z]/.test(issue.message)) return issue;
  const first = issue.errors.find((branch) => !wrongType(branch))?.[0];
  return first ? leafOf({ ...first, path: [...issue.path, ...first.path] } as Issue) : issue;
}

/** Turns zod issues into `{path, message}` pairs naming the field at fault (never echoing its value), one per field. */
export function fieldErrors(error: ZodError): FieldError[] {
  const errors = error.issues.map(leafOf).flatMap((issue) => {
    const path = issue.path.map(String);
    // one entry per unknown key, under the object it was found in (`address.zip`)
    if (issue.code === 'unrecognized_keys')
      return issue.keys.map((key) => ({
        path: [...path, key].join('.'),
        message: 'is not an accepted field',
      }));
    return [{ path: path.join('.') || '(body)', message: plainMessage(issue) }];
  });
  // the first complaint per field says what to fix; a second (the same value failing a second rule) adds nothing
  return errors.filter((e, i) => errors.findIndex((other) => other.path === e.path) === i);
}

/**
 * A router whose request schemas both validate input and feed /openapi.json. Any schema
 * failure becomes one 400 `validation_failed` naming the fields.
 */
export function createRouter(): OpenAPIHono<AppEnv> {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) throw new AppError('validation_failed', { errors: fieldErrors(result.error) });
    },
  });
}
