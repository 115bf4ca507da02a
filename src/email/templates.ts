import type { Role } from '../../db/schema.js';

export interface AccessCodeMailInput {
  name: string;
  role: Role;
  /** The plain code; shown in its groups (`7KQ2-M9XD-4HTP-R3VW`). */
  code: string;
  expiresAt: Date;
  /** When the mail is rendered: the "in N hours" is counted from here. */
  now: Date;
  appName: string;
  signupUrl: string;
  email: string;
  purpose: 'signup' | 'password_reset';
  /** Where a password reset is completed; without it the reset mail carries no link. */
  resetUrl?: string;
}

export interface RenderedMail {
  readonly subject: string;
  readonly text: string;
  readonly html: string;
}

const ROLE_PURPOSE: Record<Role, string> = {
  patient: 'to see your health records and the information your care team shares with you',
  practitioner: 'to access the records of your patients',
  admin: 'to administer the service',
};

const HTML_ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Escapes text for HTML element content and quoted attribute values. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (ch) => HTML_ESCAPES[ch] ?? ch);
}

/** The code as people read it: keeps existing groups, otherwise groups of four. */
function displayCode(code: string): string {
  const trimmed = code.trim().toUpperCase();
  if (trimmed.includes('-')) return trimmed;
  return (trimmed.match(/.{1,4}/g) ?? [trimmed]).join('-');
}

/** `2026-11-25 14:03 UTC`: absolute, so it reads the same in any time zone and mail client. */
function formatUtc(date: Date): string {
  const iso = date.toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/** `in 24 hours`, `in 1 hour`, `in 35 minutes`; undefined once the code has expired. */
export function timeLeft(expiresAt: Date, now: Date): string | undefined {
  const ms = expiresAt.getTime() - now.getTime();
  if (ms <= 0) return undefined;
  if (ms >= 3_600_000) {
    const hours = Math.round(ms / 3_600_000);
    return `in ${hours} ${hours === 1 ? 'hour' : 'hours'}`;
  }
  const minutes = Math.max(1, Math.round(ms / 60_000));
  return `in ${minutes} ${minutes === 1 ? 'minute' : 'minutes'}`;
}

/**
 * The page link with the email filled in. The code is deliberately NOT in the link: URLs leak
 * through browser history, proxy and server logs and the Referer header, so the person types it.
 */
function linkWithEmail(baseUrl: string, email: string): string {
  const url = new URL(baseUrl);
  url.searchParams.set('email', email);
  return url.toString();
}

/**
 * Collapses whitespace (including line breaks) in a display value and drops control and bidi
 * formatting characters: a name from a raw FHIR create must not render as another in the mail.
 */
function oneLine(value: string): string {
  return value
    .replace(/[\p{Cc}\u202A-\u202E\u2066-\u2069]/gu, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/**
 * The access-code mail (DESIGN.md section 7), as plain text and as simple, accessible HTML
 * with no external images or stylesheets. Every interpolated value is HTML-escaped.
 */
export function renderAccessCodeMail(input: AccessCodeMailInput): RenderedMail {
  const appName = oneLine(input.appName);
  const name = oneLine(input.name);
  const code = displayCode(input.code);
  const expiry = formatUtc(input.expiresAt);
  const left = timeLeft(input.expiresAt, input.now);
  const expiryLine = left
    ? `The code expires on ${expiry} (${left}) and works only once.`
    : `The code expired on ${expiry}; ask for a new one.`;
  const reset = input.purpose === 'password_reset';
  const subject = reset
    ? `Your password reset code for ${appName}`
    : `Your Access Code to Register on ${appName}`;
  const intro = reset
    ? `Someone asked to reset the password of your ${appName} account. Use this code to choose a new password:`
    : `An account has been created for you on ${appName} ${ROLE_PURPOSE[input.role]}. To register, use this access code:`;
  const linkBase = reset ? input.resetUrl : input.signupUrl;
  const link = linkBase ? linkWithEmail(linkBase, input.email) : undefined;
  const linkLabel = reset ? 'Reset your password here:' : 'Register here:';
  const linkNote = 'Your email address is already filled in; type the code on that page.';
  const ignore = reset
    ? 'If you were not expecting this email, you can ignore it. Your password stays the same.'
    : 'If you were not expecting this email, you can ignore it.';
  const greeting = name ? `Hello ${name},` : 'Hello,';

  const text = [
    greeting,
    '',
    intro,
    '',
    `    ${code}`,
    '',
    expiryLine,
    '',
    ...(link ? [linkLabel, link, linkNote, ''] : []),
    ignore,
    '',
    `-- ${appName}`,
    '',
  ].join('\r\n');

  const e = escapeHtml;
  const html = [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${e(subject)}</title></head>`,
    '<body style="font-family: sans-serif; line-height: 1.5; color: #111; background: #fff;">',
    '<main>',
    `<p>${e(greeting)}</p>`,
    `<p>${e(intro)}</p>`,
    `<p style="font-family: monospace; font-size: 1.5em; font-weight: bold; letter-spacing: 0.1em;">${e(code)}</p>`,
    `<p>${e(expiryLine)}</p>`,
    ...(link ? [`<p>${e(linkLabel)} <a href="${e(link)}">${e(link)}</a><br>${e(linkNote)}</p>`] : []),
    `<p>${e(ignore)}</p>`,
    `<p>&mdash; ${e(appName)}</p>`,
    '</main>',
    '</body>',
    '</html>',
    '',
  ].join('\r\n');

  return { subject, text, html };
}
