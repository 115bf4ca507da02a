import { OpenAPIHono } from '@hono/zod-openapi';
import type { ZodError } from 'zod';
import { AppError, type FieldError } from '../errors.js';
import type { AppEnv } from './types.js';

/** Turns zod issues into `{path, message}` pairs naming the field at fault (never echoing its value). */
export function fieldErrors(error: ZodError): FieldError[] {
  return error.issues.flatMap((issue) => {
    const path = issue.path.map(String);
    // one entry per unknown key, under the object it was found in (`address.zip`)
    if (issue.code === 'unrecognized_keys')
      return issue.keys.map((key) => ({
        path: [...path, key].join('.'),
        message: 'is not an accepted field',
      }));
    return [{ path: path.join('.') || '(body)', message: issue.message }];
  });
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
