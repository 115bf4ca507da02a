import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { fieldErrors } from '../../src/http/router.js';

/** Validation messages say what to fix in the guide's words, one per field (found by review of the guide). */
const schema = z
  .object({
    limit: z.coerce.number().int().min(1).max(200).optional(),
    line: z.union([z.string().max(200), z.array(z.string().max(200)).max(4)]).optional(),
    status: z.enum(['active', 'deactivated']).optional(),
    name: z.string().min(1).max(100).optional(),
    from: z.iso.datetime({ offset: true }).optional(),
    phone: z
      .string()
      .max(10)
      .regex(/^\+?[0-9 ]+$/, 'must be a phone number: digits, spaces and a leading +')
      .optional(),
    email: z.string(),
    identifier: z
      .union([
        z.object({ system: z.string(), value: z.string() }).strict(),
        z.array(z.object({ system: z.string(), value: z.string() }).strict()).max(5),
      ])
      .optional(),
    qualification: z
      .union([
        z.union([z.string(), z.object({ code: z.string() }).strict()]),
        z.array(z.union([z.string(), z.object({ code: z.string() }).strict()])).max(10),
      ])
      .optional(),
  })
  .strict();

const messages = (input: unknown) => {
  const result = schema.safeParse(input);
  if (result.success) throw new Error('expected a failure');
  return fieldErrors(result.error);
};

describe('fieldErrors', () => {
  it.each([
    [{ limit: 'abc' }, 'limit', 'must be a number'],
    [{ limit: '' }, 'limit', 'must be at least 1'],
    [{ limit: '500' }, 'limit', 'must be at most 200'],
    [{ line: ['1', '2', '3', '4', '5'] }, 'line', 'must have at most 4 items'],
    [{ status: 'gone' }, 'status', 'must be one of "active", "deactivated"'],
    [{ name: '' }, 'name', 'must not be empty'],
    [{ name: 'x'.repeat(101) }, 'name', 'must be at most 100 characters'],
    [
      { from: '2026-11-20T09:30:00' },
      'from',
      'must be an ISO 8601 date-time with a time zone, such as 2026-11-20T09:30:00Z or +01:00',
    ],
    [{ nickname: 'x' }, 'nickname', 'is not an accepted field'],
    // a union names the field at fault inside the branch of the value's type (review S3)
    [{ identifier: { system: 'urn:x' } }, 'identifier.value', 'is required'],
    [{ identifier: [{ system: 'urn:x', value: 'v' }, { value: 'w' }] }, 'identifier.1.system', 'is required'],
    [{ qualification: { display: 'x' } }, 'qualification.code', 'is required'],
    [{ qualification: Array(11).fill('MD') }, 'qualification', 'must have at most 10 items'],
  ])('%o: %s %s', (input, path, message) => {
    expect(messages({ email: 'a@example.com', ...input })).toEqual([{ path, message }]);
  });

  it('says a missing field is required, and keeps a schema’s own message', () => {
    expect(messages({})).toEqual([{ path: 'email', message: 'is required' }]);
    expect(messages({ email: 'a@example.com', phone: 'call me now!' })).toEqual([
      { path: 'phone', message: 'must be at most 10 characters' },
    ]);
    expect(messages({ email: 'a@example.com', phone: 'call me' })).toEqual([
      { path: 'phone', message: 'must be a phone number: digits, spaces and a leading +' },
    ]);
  });
});
