import type { z } from '@hono/zod-openapi';
import { unexpectedUpstreamBody } from '../fhir/upstreamStatus.js';

/**
 * A DTO built from what the FHIR server sent, checked against the schema /openapi.json promises:
 * a resource of the wrong shape (`name: "x"`, `category: "zzz"`, a numeric status) is the
 * server's fault, so the caller gets a 502 — never our 500, never a DTO that breaks its contract.
 */
export function upstreamDto<T>(schema: z.ZodType<T>, build: () => T): T {
  let dto: T;
  try {
    dto = build();
  } catch {
    throw unexpectedUpstreamBody('a resource the DTO cannot be built from');
  }
  const checked = schema.safeParse(dto);
  if (!checked.success) throw unexpectedUpstreamBody('a resource of the wrong shape');
  return checked.data;
}
