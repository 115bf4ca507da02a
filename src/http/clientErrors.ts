import type { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { AppError, toOperationOutcome, toProblem } from '../errors.js';
import { FHIR_JSON } from './fhirJson.js';
import { isFhirPath } from './fhirPaths.js';

/**
 * Requests Node's HTTP parser refuses before any route runs: a header block over 16 KiB, a
 * method it does not know, a byte a request target may not hold. Node answered them with a bare
 * status line; they get the problem+json every other refusal gets (review F), or under `/fhir`
 * the OperationOutcome (`target`: the request line's target, when it could be read). They never
 * reach the app, so they are neither logged per request nor audited (no account is known).
 */
export function clientErrorAnswer(code: string | undefined, target?: string): string | undefined {
  // the peer is gone: nobody to answer
  if (code === 'ECONNRESET') return undefined;
  // a client too slow to send its request: Node's own answer, which names no code of ours
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n';
  const error = refusalOf(code);
  const fhir = target !== undefined && isFhirPath(target.split('?')[0] ?? '');
  const body = JSON.stringify(fhir ? toOperationOutcome(error) : toProblem(error));
  return [
    `HTTP/1.1 ${error.status} ${toProblem(error).title}`,
    `Content-Type: ${fhir ? FHIR_JSON : 'application/problem+json'}`,
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Cache-Control: no-store',
    'X-Content-Type-Options: nosniff',
    'Connection: close',
    '',
    body,
  ].join('\r\n');
}

/** The target of the request line Node could not parse, when its first bytes read as one (`GET /fhir/... `). */
function targetOf(error: NodeJS.ErrnoException & { rawPacket?: unknown }): string | undefined {
  if (!Buffer.isBuffer(error.rawPacket)) return undefined;
  return /^[A-Z]+ (\/\S*) /.exec(error.rawPacket.subarray(0, 8192).toString('latin1'))?.[1];
}

function refusalOf(code: string | undefined): AppError {
  if (code === 'HPE_HEADER_OVERFLOW') return new AppError('headers_too_large');
  if (code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW') return new AppError('payload_too_large');
  return new AppError('validation_failed', { detail: 'The request is not well-formed HTTP/1.1.' });
}

/** Answers what the parser refused as clientErrorAnswer says, where Node would write its bare line. */
export function answerClientErrors(server: EventEmitter): void {
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    const answer = clientErrorAnswer(error.code, targetOf(error));
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
