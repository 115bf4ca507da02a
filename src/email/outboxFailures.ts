import type { OutboxRow } from '../../db/schema.js';
import { upstreamRefusalOf } from '../fhir/upstreamStatus.js';

/** How an outbox delivery failed: a label for `last_error`, the retry delay, and what is never retried. */

const BACKOFF_BASE_MS = 5_000;
const BACKOFF_CAP_MS = 60 * 60_000;

/**
 * Delay before retry number `attempts + 1`: 5 s, 10 s, 20 s ... capped at 1 h, each +-20 %
 * so that rows failing together (an SMTP outage) do not retry in lockstep.
 */
export function backoffMs(attempts: number, random: () => number = Math.random): number {
  const exponential = BACKOFF_BASE_MS * 2 ** Math.max(0, Math.min(attempts - 1, 20));
  const capped = Math.min(exponential, BACKOFF_CAP_MS);
  return Math.round(Math.min(capped * (0.8 + 0.4 * random()), BACKOFF_CAP_MS));
}

const SAFE_LABEL = /^[A-Za-z0-9_.:-]{1,64}$/;

/**
 * A short, secret-free description of a failure for `last_error` and logs: the error's code
 * (ECONNECTION, upstream_error ...) or its class name, plus the SMTP reply code. Never the
 * message: an SMTP server may echo the whole command or body back in it.
 */
export function errorLabel(error: unknown): string {
  // an upstream FHIR status is told by the cause (`http_400`), the more precise of the two
  const refusal = upstreamRefusalOf(error);
  if (refusal) return refusal;
  const e = error as { code?: unknown; name?: unknown; responseCode?: unknown } | null | undefined;
  const code = typeof e?.code === 'string' && SAFE_LABEL.test(e.code) ? e.code : undefined;
  const name = typeof e?.name === 'string' && SAFE_LABEL.test(e.name) ? e.name : 'Error';
  const reply = typeof e?.responseCode === 'number' ? `:smtp_${e.responseCode}` : '';
  return `${code ?? name}${reply}`;
}

/**
 * The SMTP server refused this mail or its recipient for good (a 5xx reply at RCPT or DATA, e.g.
 * an unknown or suppressed address): a label, else undefined. Retrying it for hours, and resting
 * the lane after each try, would hold back everyone else's code mails. A 5xx at connection,
 * login (a wrong password) or MAIL FROM is the server's setup, not this mail's: that one is retried.
 */
export function refusedForGood(error: unknown): string | undefined {
  const e = error as SmtpError | null | undefined;
  return refusedThisMail(e) && typeof e?.responseCode === 'number' && e.responseCode >= 500
    ? `smtp_${e.responseCode}`
    : undefined;
}

/**
 * The SMTP server put off this mail's recipient for now (a 4xx at RCPT, e.g. 452 mailbox full):
 * the row is retried with its backoff, but the lane does not rest — the server itself works, and
 * one full mailbox must not hold back everyone else's code mails.
 */
export function deferredRecipient(error: unknown): boolean {
  const e = error as SmtpError | null | undefined;
  return (
    e?.code === 'EENVELOPE' &&
    e.command === 'RCPT TO' &&
    typeof e.responseCode === 'number' &&
    e.responseCode >= 400 &&
    e.responseCode < 500
  );
}

interface SmtpError {
  readonly code?: unknown;
  readonly responseCode?: unknown;
  /** nodemailer's name of the command refused: 'MAIL FROM', 'RCPT TO', 'DATA', ... */
  readonly command?: unknown;
}

// a refusal of this mail's recipient or content; a refusal at MAIL FROM (e.g. 530 authentication
// required, a sender the relay does not accept) is the server's setup, the same for every mail
function refusedThisMail(e: SmtpError | null | undefined): boolean {
  if (e?.code === 'EMESSAGE') return true;
  return e?.code === 'EENVELOPE' && (e.command === 'RCPT TO' || e.command === 'DATA');
}

/** A failure no retry can fix: the row goes straight to 'failed'. */
export class PermanentFailure extends Error {
  constructor(readonly label: string) {
    super(label);
    this.name = 'PermanentFailure';
  }
}

/** An outbox row's JSON payload, or PermanentFailure when it is not an object. */
export function parsePayload(row: OutboxRow): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(row.payload);
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new PermanentFailure('invalid_payload');
}
