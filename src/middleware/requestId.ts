import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../http/types.js';
import { isUuidV7, uuidv7 } from '../ids.js';
import { answerHeaders, unwrittenNodeResponse } from './responseHeaders.js';

// a client-chosen id is echoed only when it is short and plain, so it cannot inject log lines or headers
const ACCEPTABLE_ID = /^[A-Za-z0-9._-]{8,64}$/;

/** Gives every request an id (the caller's X-Request-Id when well-formed), echoed in the response. */
export function requestId(): MiddlewareHandler<AppEnv> {
  // not async where the header is set before the route: one promise less per request
  return (c, next) => {
    const incoming = c.req.header('x-request-id');
    // nor when it has the form of the gateway's own ids (UUIDv7): another request could then file
    // its audit entries under an admin action's id
    const id = incoming && ACCEPTABLE_ID.test(incoming) && !isUuidV7(incoming) ? incoming : uuidv7();
    c.set('requestId', id);
    const node = unwrittenNodeResponse(c);
    if (!node) return next().then(() => void answerHeaders(c).set('X-Request-Id', id));
    node.setHeader('X-Request-Id', id);
    return next();
  };
}
