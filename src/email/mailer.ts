import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type nodemailer from 'nodemailer';
import type { SendMailOptions, Transporter } from 'nodemailer';
import { ownerOnlyDirectory } from '../fileModes.js';
import type { Logger } from '../logger.js';
import { onFirstUse } from '../onFirstUse.js';
import { isPlainAddress } from './address.js';

/** One message to one person. The mailer adds From, Date, Message-ID and the MIME structure. */
export interface MailMessage {
  readonly to: string;
  readonly subject: string;
  readonly text: string;
  readonly html: string;
}

export interface Mailer {
  /** Resolves once the SMTP server accepted the message (or the .eml file is in place). */
  send(message: MailMessage): Promise<void>;
  close(): void;
  readonly mode: 'smtp' | 'file';
}

export interface MailerOptions {
  /** smtp:// or smtps:// URL; unset selects file mode (`${dataDir}/mail/*.eml`). */
  readonly smtpUrl: string | undefined;
  readonly from: string;
  readonly dataDir: string;
  readonly logger: Logger;
  /** Connection, greeting and socket-inactivity timeout of the SMTP client. Default 10 s. */
  readonly timeoutMs?: number;
}

/** A message the mailer refuses to build: a bad recipient or a header that could smuggle others. */
export class InvalidMailError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'InvalidMailError';
  }
}

/** nodemailer, loaded with the first message: a process that never sends mail never loads it (~80 ms). */
const mailLibrary = onFirstUse<typeof nodemailer>('nodemailer');

const MAIL_DIR = 'mail';
const DEFAULT_TIMEOUT_MS = 10_000;
/** C0 controls (CR, LF, NUL, TAB ...) and DEL. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

/**
 * Throws InvalidMailError unless `to` is exactly one plain address. A CR/LF would start a new
 * header (`a@x.com\r\nBcc: c@z.com`), a comma or semicolon would add recipients, and a display
 * name or `<>` would let the visible and the delivered address differ.
 */
export function assertPlainAddress(to: string): void {
  if (typeof to !== 'string' || !isPlainAddress(to)) {
    throw new InvalidMailError('recipient must be one plain email address');
  }
}

/** Throws InvalidMailError when the subject holds CR, LF or another control character (header injection). */
function assertHeaderSafe(value: string): void {
  if (CONTROL_CHARS.test(value)) throw new InvalidMailError('header value must be a single line');
}

function messageOptions(from: string, message: MailMessage): SendMailOptions {
  assertPlainAddress(message.to);
  assertHeaderSafe(message.subject);
  return {
    from,
    to: message.to,
    subject: message.subject,
    text: message.text,
    html: message.html,
    // RFC 3834: automated mail; keeps vacation auto-replies from answering an access code
    headers: { 'Auto-Submitted': 'auto-generated' },
    // our content is always inline strings: never let a value be read as a file path or URL
    disableFileAccess: true,
    disableUrlAccess: true,
  };
}

/** `2026-11-25T14-03-12-345Z-<12 hex>.eml`: sorts by time, unique without coordination. */
function emlFileName(now: Date): string {
  return `${now.toISOString().replace(/[:.]/g, '-')}-${randomBytes(6).toString('hex')}.eml`;
}

/** The transport `make` builds, made when the first message needs it; `close` closes it if it was made. */
function transportOnFirstUse<T extends Transporter<unknown>>(
  make: (library: typeof nodemailer) => T,
): { get(): T; close(): void } {
  let transport: T | undefined;
  return {
    get: () => {
      transport ??= make(mailLibrary());
      return transport;
    },
    close: () => transport?.close(),
  };
}

function createSmtpMailer(smtpUrl: string, from: string, timeoutMs: number): Mailer {
  const transport = transportOnFirstUse((library) =>
    library.createTransport({
      url: smtpUrl,
      connectionTimeout: timeoutMs,
      greetingTimeout: timeoutMs,
      socketTimeout: timeoutMs,
      disableFileAccess: true,
      disableUrlAccess: true,
    }),
  );
  return {
    mode: 'smtp',
    send: async (message) => {
      await transport.get().sendMail(messageOptions(from, message));
    },
    close: transport.close,
  };
}

function createFileMailer(dataDir: string, from: string, logger: Logger): Mailer {
  const dir = path.join(dataDir, MAIL_DIR);
  // the files hold live access codes: readable by the service account only
  ownerOnlyDirectory(dir);
  // the same MIME composer as SMTP, but the message comes back as a buffer instead of going out
  const transport = transportOnFirstUse((library) =>
    library.createTransport({ streamTransport: true, buffer: true, newline: 'windows' }),
  );
  return {
    mode: 'file',
    send: async (message) => {
      const info = await transport.get().sendMail(messageOptions(from, message));
      const eml = info.message;
      if (!Buffer.isBuffer(eml)) throw new Error('stream transport did not return a buffer');
      const name = emlFileName(new Date());
      const file = path.join(dir, name);
      const tmp = path.join(dir, `.${name}.tmp`);
      // write then rename: a reader of the directory never sees half a message
      try {
        await fs.promises.writeFile(tmp, eml, { mode: 0o600, flag: 'wx' });
        await fs.promises.rename(tmp, file);
      } catch (error) {
        // a write cut short (a full disk) leaves no half file behind; one that existed is not ours
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') await fs.promises.rm(tmp, { force: true });
        throw error;
      }
      // where it is, never the body (it holds the code) nor the recipient (an address is personal data)
      logger.info({ mail_file: file }, 'mail written to file (SMTP_URL is not set)');
    },
    close: transport.close,
  };
}

/**
 * The mail transport: SMTP when SMTP_URL is set, otherwise RFC 5322 `.eml` files in
 * `${dataDir}/mail/` (DESIGN.md section 7, the embedded default). Every message is checked
 * for header injection before nodemailer sees it.
 * https://www.rfc-editor.org/rfc/rfc5322
 */
export function createMailer(options: MailerOptions): Mailer {
  if (options.smtpUrl) {
    return createSmtpMailer(options.smtpUrl, options.from, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  }
  return createFileMailer(options.dataDir, options.from, options.logger);
}
