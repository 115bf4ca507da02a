import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import type { Provider } from 'oidc-provider';
import { AppError } from '../errors.js';

/** oidc-provider's own limit on a form body (its selective_body.js). */
const FORM_LIMIT_BYTES = 56 * 1024;

const FORM = /^application\/x-www-form-urlencoded\s*(;|$)/i;

/**
 * SMART's refresh request names no client: "for public apps, authentication is not possible (and
 * thus not required)" (App Launch 2.2, Refresh access token), and fhirclient sends only
 * `grant_type` and `refresh_token` by default. oidc-provider wants every token request to name its
 * client, so a public app's refresh without `client_id` is given the client its refresh token was
 * issued to: what a public app presents is the token alone either way. A confidential app still
 * authenticates (an `Authorization` header, or it is refused as before), and an unknown token is
 * left for oidc-provider to refuse.
 *
 * The body is read here, so the request handed on is a copy that replays it (the original stream
 * is spent); a request that is not a form post is handed on untouched and unread.
 */
export async function withPublicRefreshClient(
  provider: Provider,
  req: IncomingMessage,
): Promise<IncomingMessage> {
  if (req.method !== 'POST' || !FORM.test(req.headers['content-type'] ?? '')) return req;
  const body = await readForm(req);
  const form = new URLSearchParams(body.toString('utf8'));
  // RFC 6749 section 2.3: "The client MUST NOT use more than one authentication method in each
  // request" (oidc-provider took the Basic header and let a secret in the body pass unread)
  if (req.headers.authorization !== undefined && (form.has('client_secret') || form.has('client_assertion')))
    throw new AppError('validation_failed', {
      detail: 'The request authenticates the client in more than one way: use HTTP Basic alone.',
    });
  if (req.headers.authorization !== undefined) return replaying(req, body);
  const refreshToken = form.get('refresh_token');
  if (form.get('grant_type') === 'refresh_token' && !form.has('client_id') && refreshToken) {
    const clientId = await publicClientOf(provider, refreshToken);
    if (clientId) {
      form.set('client_id', clientId);
      return replaying(req, Buffer.from(form.toString()));
    }
  }
  return replaying(req, body);
}

async function publicClientOf(provider: Provider, refreshToken: string): Promise<string | undefined> {
  const token = await provider.RefreshToken.find(refreshToken, { ignoreExpiration: true });
  if (!token?.clientId) return undefined;
  const client = await provider.Client.find(token.clientId);
  return client?.clientAuthMethod === 'none' ? client.clientId : undefined;
}

async function readForm(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let received = 0;
  try {
    for await (const chunk of req) {
      received += (chunk as Buffer).length;
      // refused here as oidc-provider would refuse it, without buffering more of it
      if (received > FORM_LIMIT_BYTES) throw new AppError('payload_too_large');
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    // a client that went away mid-body is its own failure (oidc-provider answered it 400 too), not our 500
    throw error instanceof AppError ? error : new AppError('validation_failed', { cause: error });
  }
  return Buffer.concat(chunks, received);
}

/** The request with `body` as its stream: what oidc-provider (Koa) reads of a request, the rest shared. */
function replaying(req: IncomingMessage, body: Buffer): IncomingMessage {
  const replay = Readable.from([body], { objectMode: false });
  // the body is whole now: its length is known, however it was framed on the wire
  const { 'transfer-encoding': _framing, ...headers } = req.headers;
  return Object.assign(replay, {
    headers: { ...headers, 'content-length': String(body.length) },
    rawHeaders: req.rawHeaders,
    method: req.method,
    url: req.url,
    httpVersion: req.httpVersion,
    httpVersionMajor: req.httpVersionMajor,
    httpVersionMinor: req.httpVersionMinor,
    socket: req.socket,
    connection: req.socket,
    complete: true,
    originalUrl: (req as IncomingMessage & { originalUrl?: string }).originalUrl,
  }) as unknown as IncomingMessage;
}
