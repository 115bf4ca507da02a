import { createHmac, timingSafeEqual } from 'node:crypto';
import type { HttpBindings } from '@hono/node-server';
import type { Context } from 'hono';
import type { InteractionResults } from 'oidc-provider';
import type { UserRow } from '../../db/schema.js';
import { writeAudit } from '../audit/auditService.js';
import { wasAudited } from '../audit/requestAudit.js';
import { verifyLogin } from '../auth/authService.js';
import { passwordTooLong } from '../auth/passwords.js';
import { AppError } from '../errors.js';
import { requestContext } from '../http/requestContext.js';
import { EmailSchema } from '../http/schemas.js';
import type { AppEnv } from '../http/types.js';
import { canSignIn } from '../users/accountStatus.js';
import { findUserById } from '../users/userRepository.js';
import { startSmartSession } from './accounts.js';
import type { OAuthServer } from './provider.js';
import { findSmartApp } from './smartAppRepository.js';
import { grantFor, saveGrant } from './smartGrant.js';
import { INTERACTION_PREFIX } from './urls.js';
import { consentPage, errorPage, loginPage, pageCsp } from './views.js';

/**
 * Our login and consent pages for oidc-provider's interactions
 * (https://github.com/panva/node-oidc-provider/blob/main/docs/README.md#user-flows). Login is
 * POST /auth/login's: the same accounts, rate limits, argon2 verification and audit
 * (`verifyLogin`). Consent shows what the app asked for in plain words and what it would get
 * (asked ∩ registered ∩ role); Allow saves the grant and starts the gateway session its tokens
 * belong to. Each form carries a CSRF token bound to its interaction, besides oidc-provider's
 * SameSite interaction cookie.
 */

type Ctx = Context<AppEnv>;
type Interaction = Awaited<ReturnType<OAuthServer['provider']['interactionDetails']>>;

const EXPIRED =
  'This sign-in page has expired, or was opened outside the app that started it. Go back to the app and start again.';

function bindings(c: Ctx): HttpBindings {
  const env = c.env as Partial<HttpBindings> | undefined;
  if (!env?.incoming || !env.outgoing) throw new AppError('not_found');
  return env as HttpBindings;
}

const csrfMac = (key: Buffer, uid: string, purpose: 'login' | 'consent') =>
  createHmac('sha256', key).update(`${purpose}:${uid}`).digest('base64url');

/** A CSRF token for one form of one interaction: HMAC(key, purpose ‖ uid), with the current key. */
function csrfToken(server: OAuthServer, uid: string, purpose: 'login' | 'consent'): string {
  return csrfMac(server.csrfKeys[0] as Buffer, uid, purpose);
}

/** Checked against every key, so a form rendered before a rotation of APP_SECRET still posts. */
function csrfValid(
  server: OAuthServer,
  uid: string,
  purpose: 'login' | 'consent',
  presented: unknown,
): boolean {
  if (typeof presented !== 'string') return false;
  const actual = Buffer.from(presented);
  return server.csrfKeys.some((key) => {
    const expected = Buffer.from(csrfMac(key, uid, purpose));
    return expected.length === actual.length && timingSafeEqual(expected, actual);
  });
}

/** The origins an app's redirect URIs live at: the only places a form of ours may end up at. */
function redirectOrigins(redirectUris: readonly string[] | undefined): string[] {
  return [...new Set((redirectUris ?? []).flatMap((uri) => URL.parse(uri)?.origin ?? []))];
}

function html(c: Ctx, body: string, status: number, formTargets: readonly string[] = []) {
  return c.body(body, status as 200, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Security-Policy': pageCsp(formTargets),
    'Cache-Control': 'no-store',
  });
}

function errorHtml(c: Ctx, status: number, title: string, detail: string) {
  return html(c, errorPage(c.var.deps.config.appName, title, detail), status);
}

/** The interaction of this browser (its cookie) if it is the one the URL names. */
async function interactionOf(c: Ctx, server: OAuthServer, uid: string): Promise<Interaction | undefined> {
  const { incoming, outgoing } = bindings(c);
  try {
    const details = await server.provider.interactionDetails(incoming, outgoing);
    return details.uid === uid ? details : undefined;
  } catch {
    return undefined;
  }
}

async function finish(c: Ctx, server: OAuthServer, result: InteractionResults, merge: boolean) {
  const { incoming, outgoing } = bindings(c);
  const returnTo = await server.provider.interactionResult(incoming, outgoing, result, {
    mergeWithLastSubmission: merge,
  });
  return c.redirect(returnTo, 303);
}

interface Launch {
  readonly clientId: string;
  readonly clientName: string;
  readonly appScopes: string;
  readonly origins: string[];
}

async function launchOf(c: Ctx, details: Interaction): Promise<Launch | undefined> {
  const clientId = String(details.params.client_id ?? '');
  const app = await findSmartApp(c.var.deps.db, clientId);
  if (app?.is_active !== 1) return undefined;
  return {
    clientId,
    clientName: app.name,
    appScopes: app.scopes,
    origins: redirectOrigins(JSON.parse(app.redirect_uris) as string[]),
  };
}

function renderLogin(c: Ctx, server: OAuthServer, uid: string, launch: Launch, status = 200, extra = {}) {
  const view = {
    appName: c.var.deps.config.appName,
    clientName: launch.clientName,
    action: `${INTERACTION_PREFIX}${uid}/login`,
    csrf: csrfToken(server, uid, 'login'),
    ...extra,
  };
  return html(c, loginPage(view), status, launch.origins);
}

/** The account's token version when its password was checked, kept with the login's result. */
const TOKEN_VERSION_AT_LOGIN = 'gatewayTokenVersion';

async function consentContext(c: Ctx, details: Interaction, launch: Launch) {
  const accountId = details.session?.accountId;
  const user = accountId ? await findUserById(c.var.deps.db, accountId) : undefined;
  if (!user || !canSignIn(user)) return undefined;
  // security: a password change, reset or deactivation since the login ended every session; a
  // consent given on the page the old password opened would begin a new one
  if (details.lastSubmission?.[TOKEN_VERSION_AT_LOGIN] !== user.token_version) return undefined;
  const requested = String(details.params.scope ?? '');
  return { user, grant: grantFor(requested, launch.appScopes, user.role) };
}

/** GET /oauth/interaction/{uid}: the login or the consent page, whichever the interaction is at. */
export async function showInteraction(c: Ctx, server: OAuthServer, uid: string) {
  const details = await interactionOf(c, server, uid);
  const launch = details && (await launchOf(c, details));
  if (!details || !launch) return errorHtml(c, 400, 'This page cannot be used', EXPIRED);
  if (details.prompt.name === 'login') return renderLogin(c, server, uid, launch);
  const consent = await consentContext(c, details, launch);
  if (!consent) return errorHtml(c, 400, 'This page cannot be used', EXPIRED);
  const view = {
    appName: c.var.deps.config.appName,
    clientName: launch.clientName,
    userEmail: consent.user.email,
    action: `${INTERACTION_PREFIX}${uid}/consent`,
    csrf: csrfToken(server, uid, 'consent'),
    ...consent.grant,
  };
  return html(c, consentPage(view), 200, launch.origins);
}

/** The failures verifyLogin does not audit itself (it audits every wrong credential). */
function auditLoginRefusal(c: Ctx, errorCode: string, clientId: string) {
  const ctx = requestContext(c);
  return writeAudit(c.var.deps.db, c.var.deps.clock, {
    action: 'auth.login',
    outcome: 'denied',
    errorCode,
    requestId: ctx.requestId,
    clientIp: ctx.clientIp,
    detail: { via: 'smart', client_id: clientId },
  });
}

async function checkLogin(
  c: Ctx,
  launch: Launch,
  email: string,
  password: string,
): Promise<UserRow | AppError> {
  // refused before hashing, as /auth/login does, and audited here (verifyLogin never sees it); an
  // address that is not one (a NUL, which PostgreSQL refuses) never reaches the database
  if (passwordTooLong(password) || email.length > 254 || !EmailSchema.safeParse(email).success) {
    await auditLoginRefusal(c, 'invalid_credentials', launch.clientId);
    return new AppError('invalid_credentials');
  }
  try {
    const detail = { via: 'smart', client_id: launch.clientId };
    return await verifyLogin(c.var.deps, { email, password }, requestContext(c), detail);
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
    if (!wasAudited(error)) await auditLoginRefusal(c, error.code, launch.clientId);
    return error;
  }
}

/**
 * The fields of a posted form. Our pages post urlencoded forms only, each field once: any other
 * body (a multipart one that does not parse threw, a 500), or a field sent twice (which of the two
 * would count is a guess), is no post of theirs, and undefined here.
 */
async function postedForm(c: Ctx): Promise<Record<string, unknown> | undefined> {
  if (!/^application\/x-www-form-urlencoded\s*(;|$)/i.test(c.req.header('content-type') ?? ''))
    return undefined;
  try {
    const form = await c.req.parseBody({ all: true });
    return Object.values(form).some(Array.isArray) ? undefined : form;
  } catch {
    return undefined;
  }
}

const NOT_OUR_FORM = 'This page accepts only the form it shows. Go back to the app and start again.';

/** POST /oauth/interaction/{uid}/login: email and password, checked exactly as POST /auth/login checks them. */
export async function submitLogin(c: Ctx, server: OAuthServer, uid: string) {
  const details = await interactionOf(c, server, uid);
  const launch = details && (await launchOf(c, details));
  if (!details || !launch || details.prompt.name !== 'login')
    return errorHtml(c, 400, 'This page cannot be used', EXPIRED);
  const form = await postedForm(c);
  if (!form) return errorHtml(c, 400, 'This page cannot be used', NOT_OUR_FORM);
  // a post that did not come from the form we rendered for this interaction
  if (!csrfValid(server, uid, 'login', form.csrf)) return errorHtml(c, 403, 'Request refused', EXPIRED);
  const email = typeof form.email === 'string' ? form.email.trim() : '';
  const password = typeof form.password === 'string' ? form.password : '';
  const checked = await checkLogin(c, launch, email, password);
  if (checked instanceof AppError) {
    // answered as a page, not thrown: named for the request log and the metrics as a thrown refusal is
    c.error = checked;
    const status = checked.status;
    if (checked.headers['Retry-After']) c.header('Retry-After', checked.headers['Retry-After']);
    return renderLogin(c, server, uid, launch, status, { email, error: checked.detail });
  }
  return finish(
    c,
    server,
    {
      login: { accountId: checked.id, amr: ['pwd'], remember: false },
      [TOKEN_VERSION_AT_LOGIN]: checked.token_version,
    },
    false,
  );
}

/** POST /oauth/interaction/{uid}/consent: Allow saves the grant and its session; Deny tells the app `access_denied`. */
export async function submitConsent(c: Ctx, server: OAuthServer, uid: string) {
  const details = await interactionOf(c, server, uid);
  const launch = details && (await launchOf(c, details));
  if (!details || !launch || details.prompt.name !== 'consent')
    return errorHtml(c, 400, 'This page cannot be used', EXPIRED);
  const form = await postedForm(c);
  if (!form) return errorHtml(c, 400, 'This page cannot be used', NOT_OUR_FORM);
  // a cross-site post, or one replayed from another interaction, must not grant anything
  if (!csrfValid(server, uid, 'consent', form.csrf)) return errorHtml(c, 403, 'Request refused', EXPIRED);
  const consent = await consentContext(c, details, launch);
  if (!consent) return errorHtml(c, 400, 'This page cannot be used', EXPIRED);
  const { user, grant } = consent;
  const allowed = form.decision === 'allow' && grant.granted.length > 0;
  await auditConsent(c, user, launch.clientId, allowed ? grant.granted.join(' ') : undefined);
  if (!allowed) {
    const description =
      form.decision === 'allow' ? 'none of the requested scopes can be granted' : 'the user denied access';
    return finish(c, server, { error: 'access_denied', error_description: description }, false);
  }
  await askForWhatWasGranted(details, grant.granted);
  const grantId = await saveGrant(server.provider, {
    accountId: user.id,
    clientId: launch.clientId,
    fhirBase: server.fhirBase,
    grant,
  });
  await startSmartSession(c.var.deps, grantId, user, launch.clientId);
  return finish(c, server, { consent: { grantId } }, true);
}

/**
 * The authorization request goes on asking for exactly what was granted. oidc-provider puts in
 * the code only the granted scopes the request named literally, so a scope granted narrowed
 * (`patient/*.cruds` asked of an app registered for `patient/Observation.rs`, granted as
 * `patient/Observation.rs`) reached no token, though the consent page had promised it.
 */
async function askForWhatWasGranted(details: Interaction, granted: readonly string[]): Promise<void> {
  details.params.scope = granted.join(' ');
  await details.save(Math.max(1, details.exp - Math.floor(Date.now() / 1000)));
}

function auditConsent(c: Ctx, user: UserRow, clientId: string, granted: string | undefined) {
  const ctx = requestContext(c);
  return writeAudit(c.var.deps.db, c.var.deps.clock, {
    action: 'smart.consent',
    outcome: granted ? 'success' : 'denied',
    actorUserId: user.id,
    actorRole: user.role,
    requestId: ctx.requestId,
    clientIp: ctx.clientIp,
    detail: { client_id: clientId, ...(granted ? { scope: granted } : {}) },
  });
}
