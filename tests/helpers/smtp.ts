import type { AddressInfo } from 'node:net';
import { type ParsedMail, simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

export interface SmtpCapture {
  /** `smtp://127.0.0.1:<port>`, for SMTP_URL or createMailer. */
  readonly url: string;
  readonly port: number;
  /** Every message received so far, parsed, in arrival order. */
  readonly messages: ParsedMail[];
  /** Resolves once at least `count` messages arrived; rejects after `timeoutMs` (default 5 s). */
  waitFor(count: number, timeoutMs?: number): Promise<ParsedMail[]>;
  close(): Promise<void>;
}

export interface SmtpCaptureOptions {
  /** Listen on this port, e.g. to bring a stopped capture back ("SMTP down, then back"). Default: ephemeral. */
  readonly port?: number;
  /** Delay before accepting each message, to widen race windows in tests. */
  readonly acceptDelayMs?: number;
  /** Recipients refused for good at RCPT TO (550, as a relay refuses an unknown or suppressed address). */
  readonly refuse?: readonly string[];
  /** Recipients put off for now at RCPT TO (452, as a full mailbox). */
  readonly defer?: readonly string[];
  /** Refuses every sender at MAIL FROM with this 5xx (530: authentication required). */
  readonly refuseSender?: number;
}

/**
 * A real SMTP server on 127.0.0.1 that keeps what it receives: plain smtp:// (STARTTLS off),
 * any or no authentication, each message parsed with mailparser.
 */
export async function startSmtpCapture(options: SmtpCaptureOptions = {}): Promise<SmtpCapture> {
  const messages: ParsedMail[] = [];
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of [...waiters]) w();
  };

  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    // close() waits at most this long for clients still connected
    closeTimeout: 1_000,
    onAuth: (_auth, _session, callback) => callback(null, { user: 'test' }),
    onMailFrom: (_address, _session, callback) => {
      if (!options.refuseSender) return callback();
      callback(
        Object.assign(new Error('5.7.0 authentication required'), { responseCode: options.refuseSender }),
      );
    },
    onRcptTo: (address, _session, callback) => {
      if (options.defer?.includes(address.address))
        return callback(Object.assign(new Error('4.2.2 mailbox full'), { responseCode: 452 }));
      if (!options.refuse?.includes(address.address)) return callback();
      callback(Object.assign(new Error('5.1.1 mailbox unavailable'), { responseCode: 550 }));
    },
    onData: (stream, _session, callback) => {
      simpleParser(stream)
        .then(async (mail) => {
          if (options.acceptDelayMs) await new Promise((r) => setTimeout(r, options.acceptDelayMs));
          messages.push(mail);
          notify();
          callback();
        })
        .catch((error: Error) => callback(error));
    },
  });

  // a client killed mid-session (the crash tests SIGKILL the gateway) resets its connection: not our failure
  server.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.server.address() as AddressInfo;

  return {
    url: `smtp://127.0.0.1:${port}`,
    port,
    messages,
    waitFor: (count, timeoutMs = 5_000) =>
      new Promise<ParsedMail[]>((resolve, reject) => {
        const check = () => {
          if (messages.length < count) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(messages);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`expected ${count} messages within ${timeoutMs} ms, got ${messages.length}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
