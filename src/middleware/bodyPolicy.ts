import type { MiddlewareHandler } from 'hono';
import { AppError } from '../errors.js';
import { assertJsonBody } from '../fhir/negotiation.js';
import { isFhirPath, isSlimFhirPath } from '../http/fhirPaths.js';
import type { AppEnv } from '../http/types.js';
import { isProtocolPath } from '../oauth/urls.js';
import { bodySizeLimit } from './bodySizeLimit.js';

/** Slim JSON bodies are small; FHIR resources can be larger. */
const SLIM_BODY_LIMIT_BYTES = 64 * 1024;
const FHIR_BODY_LIMIT_BYTES = 5 * 1024 * 1024;

/**
 * How a request's body is held, by path and method:
 * - `none`: a GET, HEAD or OPTIONS has no body to limit (the limit would build a whole WHATWG Request to look for one);
 * - `fhir`: FHIR resources, up to 5 MiB, their media types checked by the passthrough;
 * - `protocol`: the SMART authorization server reads its own request bodies (src/oauth/urls.ts);
 * - `json`: the JSON API takes JSON only, also where a route takes no body (it would be ignored silently);
 * - `slim`: anything else (the SMART login and consent pages post forms), up to 64 KiB.
 */
export type BodyRule = 'none' | 'fhir' | 'protocol' | 'json' | 'slim';

export function bodyRuleFor(path: string, method: string): BodyRule {
  if (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') return 'none';
  if (isFhirPath(path, method)) return 'fhir';
  if (isProtocolPath(path)) return 'protocol';
  if (path.startsWith('/auth/') || path.startsWith('/admin/') || isSlimFhirPath(path, method)) return 'json';
  return 'slim';
}

/** Whether a request says it carries a body (HTTP/1.1 framing: a length above 0, or chunks). */
function hasBody(contentLength: string | undefined, transferEncoding: string | undefined): boolean {
  return transferEncoding !== undefined || (contentLength !== undefined && contentLength !== '0');
}

/** Every request's body: limited in size (413) and, on the JSON API, JSON (415), before any route reads it. */
export function bodyPolicy(): MiddlewareHandler<AppEnv> {
  const tooLarge = () => {
    throw new AppError('payload_too_large');
  };
  const fhirLimit = bodySizeLimit(FHIR_BODY_LIMIT_BYTES, tooLarge);
  const slimLimit = bodySizeLimit(SLIM_BODY_LIMIT_BYTES, tooLarge);
  return async (c, next) => {
    switch (bodyRuleFor(c.req.path, c.req.method)) {
      case 'none':
      case 'protocol':
        return next();
      case 'fhir':
        return fhirLimit(c, next);
      case 'json':
        if (hasBody(c.req.header('content-length'), c.req.header('transfer-encoding')))
          assertJsonBody(c.req.header('content-type'));
        return slimLimit(c, next);
      case 'slim':
        return slimLimit(c, next);
    }
  };
}
