import { createHash } from 'node:crypto';
import { describeScope } from '../fhir/smartScopes.js';

/**
 * The server-rendered pages of a SMART launch: login, consent, and errors. Plain HTML forms: no
 * script at all (they work with scripts off), one stylesheet inlined and allowed by its hash, a
 * CSRF token in every form, native buttons and labelled fields in document order (keyboard:
 * Tab and Enter), visible focus. Every value is escaped.
 */

const STYLE = `
:root{color-scheme:light dark;font-family:system-ui,sans-serif;line-height:1.5}
body{margin:0;padding:2rem 1rem;background:Canvas;color:CanvasText}
main{max-width:32rem;margin:0 auto;padding:1.5rem;border:1px solid GrayText;border-radius:.5rem}
h1{font-size:1.4rem;margin-top:0}
label{display:block;margin:1rem 0 .25rem;font-weight:600}
input{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid GrayText;border-radius:.3rem}
button{font-size:1rem;padding:.6rem 1.2rem;margin:1.25rem .5rem 0 0;border-radius:.3rem;border:1px solid GrayText;cursor:pointer}
button.primary{background:#1f5fbf;color:#fff;border-color:#1f5fbf}
:focus-visible{outline:3px solid #f5a623;outline-offset:2px}
.error{border-left:4px solid #c0392b;padding:.5rem .75rem;background:color-mix(in srgb,#c0392b 12%,Canvas)}
.muted{color:GrayText;font-size:.9rem}
ul{padding-left:1.25rem}
code{font-size:.85rem}
`.trim();

const STYLE_HASH = `sha256-${createHash('sha256').update(STYLE).digest('base64')}`;

/**
 * The pages' Content-Security-Policy: nothing may load or run but the inlined stylesheet, forms
 * post only to this server and the app's registered redirect origins (Chromium applies
 * `form-action` to the redirects after a post, which end at the app), and no page may frame ours.
 */
export function pageCsp(formTargets: readonly string[] = []): string {
  const targets = ["'self'", ...formTargets].join(' ');
  return [
    "default-src 'none'",
    `style-src '${STYLE_HASH}'`,
    "img-src 'none'",
    `form-action ${targets}`,
    "frame-ancestors 'none'",
    "base-uri 'none'",
  ].join('; ');
}

const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** HTML-escapes text and attribute values. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (ch) => ESCAPES[ch] ?? ch);
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>`;
}

export interface LoginView {
  readonly appName: string;
  readonly clientName: string;
  readonly action: string;
  readonly csrf: string;
  readonly email?: string;
  readonly error?: string;
}

/** Email and password, for an app that asked to sign the person in. */
export function loginPage(view: LoginView): string {
  const error = view.error ? `<p class="error" role="alert">${escapeHtml(view.error)}</p>` : '';
  return page(
    `Sign in — ${view.appName}`,
    `<h1>Sign in to ${escapeHtml(view.appName)}</h1>
<p><strong>${escapeHtml(view.clientName)}</strong> asks you to sign in with your ${escapeHtml(view.appName)} account.</p>
${error}
<form method="post" action="${escapeHtml(view.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(view.csrf)}">
<label for="email">Email</label>
<input id="email" name="email" type="email" autocomplete="username" required maxlength="254" value="${escapeHtml(view.email ?? '')}" autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required maxlength="128">
<button class="primary" type="submit">Sign in</button>
</form>
<p class="muted">Your password is sent to ${escapeHtml(view.appName)} only, never to the app.</p>`,
  );
}

export interface ConsentView {
  readonly appName: string;
  readonly clientName: string;
  readonly userEmail: string;
  readonly action: string;
  readonly csrf: string;
  readonly granted: readonly string[];
  readonly dropped: readonly string[];
}

function scopeItems(scopes: readonly string[]): string {
  return scopes
    .map((s) => `<li>${escapeHtml(describeScope(s))} <code>${escapeHtml(s)}</code></li>`)
    .join('\n');
}

/** What the app asked for, in plain words, what it would get, and Allow / Deny. */
export function consentPage(view: ConsentView): string {
  const dropped =
    view.dropped.length > 0
      ? `<h2>Not given, or given only in part as listed above (the app is not registered for it, or your account does not allow it)</h2>
<ul>${scopeItems(view.dropped)}</ul>`
      : '';
  const grant =
    view.granted.length > 0
      ? `<p><strong>${escapeHtml(view.clientName)}</strong> would be allowed to:</p>
<ul>${scopeItems(view.granted)}</ul>`
      : `<p class="error" role="alert">None of what <strong>${escapeHtml(view.clientName)}</strong> asked for can be given to it.</p>`;
  const allow =
    view.granted.length > 0
      ? '<button class="primary" type="submit" name="decision" value="allow">Allow</button>'
      : '';
  return page(
    `Allow access — ${view.appName}`,
    `<h1>Allow ${escapeHtml(view.clientName)} to use your ${escapeHtml(view.appName)} account?</h1>
<p class="muted">Signed in as ${escapeHtml(view.userEmail)}.</p>
${grant}
${dropped}
<form method="post" action="${escapeHtml(view.action)}">
<input type="hidden" name="csrf" value="${escapeHtml(view.csrf)}">
${allow}
<button type="submit" name="decision" value="deny">Deny</button>
</form>
<p class="muted">You can end this access at any time by signing out of the app; an administrator can also end it.</p>`,
  );
}

/** An error the person sees instead of being sent anywhere (an unknown app or redirect URI, a stale page). */
export function errorPage(appName: string, title: string, detail: string): string {
  return page(
    `${title} — ${appName}`,
    `<h1>${escapeHtml(title)}</h1>
<p class="error" role="alert">${escapeHtml(detail)}</p>
<p class="muted">Go back to the app and start again. Nothing was shared with it.</p>`,
  );
}
