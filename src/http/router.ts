import { OpenAPIHono } from '@hono/zod-openapi';
import type { ZodError } from 'zod';
import { AppError, type FieldError } from '../errors.js';
import type { AppEnv } from './types.js';

/** Turns zod issues into `{path, message}` pairs naming the field at fault (never echoing its value). */
export function fieldErrors(error: ZodError): FieldError[] {
  return error.issues.map((issue) => {
    const path = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      return { path: issue.keys.join(', '), message: 'is not an accepted field' };
    }
    return { path: path || '(body)', message: issue.message };
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
