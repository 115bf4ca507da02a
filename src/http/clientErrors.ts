import type { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { AppError, toProblem } from '../errors.js';

/**
 * Requests Node's HTTP parser refuses before any route runs: a header block over 16 KiB, a
 * method it does not know, a byte a request target may not hold. Node answered them with a bare
 * status line; they get the problem+json every other refusal gets (review F). They never reach
 * the app, so they are neither logged per request nor audited (no account is known).
 */
export function clientErrorAnswer(code: string | undefined): string | undefined {
  // the peer is gone: nobody to answer
  if (code === 'ECONNRESET') return undefined;
  // a client too slow to send its request: Node's own answer, which names no code of ours
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n';
  const problem = toProblem(refusalOf(code));
  const body = JSON.stringify(problem);
  return [
    `HTTP/1.1 ${problem.status} ${problem.title}`,
    'Content-Type: application/problem+json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Cache-Control: no-store',
    'X-Content-Type-Options: nosniff',
    'Connection: close',
    '',
    body,
  ].join('\r\n');
}

function refusalOf(code: string | undefined): AppError {
  if (code === 'HPE_HEADER_OVERFLOW') return new AppError('headers_too_large');
  if (code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW') return new AppError('payload_too_large');
  return new AppError('validation_failed', { detail: 'The request is not well-formed HTTP/1.1.' });
}

/** Answers what the parser refused as clientErrorAnswer says, where Node would write its bare line. */
export function answerClientErrors(server: EventEmitter): void {
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    const answer = clientErrorAnswer(error.code);
    // an earlier request on this connection still has its answer to come (pipelining): ours would
    // be read as that one's, so the connection is cut instead
    const earlierPending = (socket as { _httpMessage?: unknown })._httpMessage != null;
    if (answer === undefined || !socket.writable || earlierPending) {
      socket.destroy();
      return;
    }
    // closed once written, as Node's own answer is: a half-open socket would hold the server's close
    socket.end(answer, () => socket.destroy());
  });
}
