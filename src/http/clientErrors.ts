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
  const error =
    code === 'HPE_HEADER_OVERFLOW'
      ? new AppError('headers_too_large')
      : new AppError('validation_failed', { detail: 'The request is not well-formed HTTP/1.1.' });
  const body = JSON.stringify(toProblem(error));
  return [
    `HTTP/1.1 ${error.status} ${toProblem(error).title}`,
    'Content-Type: application/problem+json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Cache-Control: no-store',
    'X-Content-Type-Options: nosniff',
    'Connection: close',
    '',
    body,
  ].join('\r\n');
}

/** Answers what the parser refused as clientErrorAnswer says, where Node would write its bare line. */
export function answerClientErrors(server: EventEmitter): void {
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    const inProgress = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    const answer = clientErrorAnswer(error.code);
    // as Node does: nothing is written into an answer already under way
    if (answer === undefined || !socket.writable || inProgress?.headersSent) {
      socket.destroy();
      return;
    }
    socket.end(answer);
  });
}
