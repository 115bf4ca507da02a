import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM_FLAGS, findChromium } from '../helpers/chromium.js';
import type { TestGateway } from '../helpers/gateway.js';
import {
  authorizeUrl,
  freePort,
  pkcePair,
  type RegisteredApp,
  registerApp,
  startSmartGateway,
} from '../helpers/smart.js';

/**
 * A real SMART app: a page using the `fhirclient` library (its browser build, as an app would
 * ship it) served from another origin, driven in headless Chromium. `FHIR.oauth2.authorize`
 * discovers the gateway, the person logs in and consents with the keyboard on the gateway's
 * pages, `FHIR.oauth2.ready` exchanges the code, the app lists Observations through /fhir, and
 * (with `offline_access`) refreshes its token as fhirclient does by default, naming no client.
 * Screenshots of the login and consent pages go to test-artifacts/.
 */

const ARTIFACTS = 'test-artifacts';
const FHIR_CLIENT = 'node_modules/fhirclient/build/fhir-client.min.js';

const chromiumPath = findChromium('the fhirclient launch');

const launchPage = (iss: string, clientId: string, scope: string) => `<!doctype html>
<meta charset="utf-8"><title>Launch</title>
<script src="/app/fhir-client.js"></script>
<script>
FHIR.oauth2.authorize(${JSON.stringify({ iss, clientId, scope, redirectUri: '/app/index.html', pkceMode: 'required' })});
</script>`;

/** The app: lists the Observations it can read, for the patient in context or the one named in ?subject. */
const INDEX_PAGE = `<!doctype html>
<meta charset="utf-8"><title>My Health Charts</title>
<h1>Observations</h1>
<ul id="observations"></ul>
<pre id="status">loading</pre>
<script src="/app/fhir-client.js"></script>
<script>
FHIR.oauth2.ready().then(async (client) => {
  const subject = sessionStorage.getItem('subject');
  const query = subject ? 'Observation?subject=' + subject : 'Observation?patient=' + client.patient.id;
  const observations = await client.request(query, { flat: true });
  for (const o of observations) {
    const li = document.createElement('li');
    li.textContent = o.code.text + ': ' + o.valueQuantity.value + ' ' + o.valueQuantity.unit;
    document.getElementById('observations').appendChild(li);
  }
  // a launch with offline_access refreshes as fhirclient does by default: no client_id in the form
  let refreshed = null;
  if (client.state.tokenResponse.refresh_token) {
    const before = client.state.tokenResponse.access_token;
    await client.refresh();
    const again = await client.request(query, { flat: true });
    refreshed = client.state.tokenResponse.access_token !== before && again.length === observations.length;
  }
  document.getElementById('status').textContent = JSON.stringify({
    done: true,
    refreshed,
    patient: client.patient.id || null,
    fhirUser: client.getFhirUser() || null,
    scope: client.state.tokenResponse.scope,
    count: observations.length,
  });
}).catch((error) => {
  document.getElementById('status').textContent = JSON.stringify({ error: String(error) });
});
</script>`;

interface AppServer {
  readonly origin: string;
  close(): Promise<void>;
}

async function startAppServer(pages: Record<string, string>): Promise<AppServer> {
  const client = fs.readFileSync(FHIR_CLIENT);
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://app').pathname;
    if (path === '/app/fhir-client.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(client);
      return;
    }
    const page = pages[path];
    if (page === undefined) res.writeHead(404).end();
    else res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page);
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe.skipIf(!chromiumPath)('a fhirclient SMART app in headless Chromium', () => {
  let gw: TestGateway;
  let appServer: AppServer;
  let app: RegisteredApp;
  const pages: Record<string, string> = { '/app/index.html': INDEX_PAGE, '/app/callback': '<p>callback</p>' };
  let patient: { email: string; password: string };
  let practitioner: { email: string; password: string };
  let panelPatientId: string;

  beforeAll(async () => {
    appServer = await startAppServer(pages);
    // the app's origin may call /fhir from the browser (CORS); the token endpoint allows it by its redirect URI
    gw = await startSmartGateway({ env: { CORS_ORIGINS: appServer.origin } });
    app = await registerApp(gw, {
      name: 'My Health Charts',
      redirect_uris: [`${appServer.origin}/app/index.html`, `${appServer.origin}/app/callback`],
      scopes: ['launch/patient', 'openid', 'fhirUser', 'offline_access', 'patient/*.rs', 'user/*.rs'],
    });
    const fhir = gw.deps.fhir;
    const doctor = await fhir.create('Practitioner', {
      resourceType: 'Practitioner',
      name: [{ family: 'Doe' }],
    });
    const me = await fhir.create('Patient', {
      resourceType: 'Patient',
      name: [{ family: 'Lee' }],
      generalPractitioner: [{ reference: `Practitioner/${doctor.id}` }],
    });
    panelPatientId = me.id;
    for (const [text, value] of [
      ['Body weight', 70],
      ['Heart rate', 62],
    ] as const) {
      await fhir.create('Observation', {
        resourceType: 'Observation',
        status: 'final',
        code: { text },
        subject: { reference: `Patient/${me.id}` },
        valueQuantity: { value, unit: text === 'Body weight' ? 'kg' : '/min' },
      } as never);
    }
    patient = await gw.seedUser({ role: 'patient', fhirId: me.id });
    practitioner = await gw.seedUser({ role: 'practitioner', fhirId: doctor.id });
    const iss = `${gw.deps.config.publicBaseUrl}/fhir`;
    pages['/app/launch-patient.html'] = launchPage(
      iss,
      app.client_id,
      'launch/patient openid fhirUser offline_access patient/*.rs',
    );
    pages['/app/launch-practitioner.html'] = launchPage(iss, app.client_id, 'openid fhirUser user/*.rs');
    // the base as many setups write it: with a trailing slash (fhirclient sends it as the aud)
    pages['/app/launch-slash.html'] = launchPage(
      `${iss}/`,
      app.client_id,
      'launch/patient openid fhirUser patient/*.rs',
    );
    fs.mkdirSync(ARTIFACTS, { recursive: true });
  });
  afterAll(async () => {
    await gw?.close();
    await appServer?.close();
  });

  async function withBrowser<T>(
    javaScript: boolean,
    run: (page: import('playwright-core').Page) => Promise<T>,
  ) {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: chromiumPath!, args: CHROMIUM_FLAGS });
    try {
      const context = await browser.newContext({
        viewport: { width: 900, height: 800 },
        javaScriptEnabled: javaScript,
      });
      // nothing but the gateway and the app: both on 127.0.0.1
      await context.route('**/*', (route) =>
        new URL(route.request().url()).hostname === '127.0.0.1'
          ? route.continue()
          : route.abort('blockedbyclient'),
      );
      return await run(await context.newPage());
    } finally {
      await browser.close();
    }
  }

  /** Login and consent on the gateway's pages, with the keyboard only. */
  async function signInAndAllow(
    page: import('playwright-core').Page,
    user: { email: string; password: string },
    shots: string,
  ) {
    await page.waitForURL(/\/oauth\/interaction\//);
    await page.getByRole('heading', { name: /Sign in to/ }).waitFor();
    await page.screenshot({ path: `${ARTIFACTS}/smart-login${shots}.png`, fullPage: true });
    // the email field has focus (autofocus); Tab to the password; Enter submits
    await page.keyboard.type(user.email);
    await page.keyboard.press('Tab');
    await page.keyboard.type(user.password);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: /Allow My Health Charts/ }).waitFor();
    await page.screenshot({ path: `${ARTIFACTS}/smart-consent${shots}.png`, fullPage: true });
    // Tab reaches Allow first; Enter presses it
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => document.activeElement?.textContent ?? null);
    expect(focused).toBe('Allow');
    await page.keyboard.press('Enter');
  }

  async function appStatus(page: import('playwright-core').Page) {
    await page.waitForFunction(
      () => document.getElementById('status')?.textContent !== 'loading',
      undefined,
      {
        timeout: 20_000,
      },
    );
    return JSON.parse((await page.locator('#status').textContent()) ?? '{}') as Record<string, unknown>;
  }

  it("completes a standalone patient launch and lists the patient's Observations through /fhir", async () => {
    await withBrowser(true, async (page) => {
      await page.goto(`${appServer.origin}/app/launch-patient.html`);
      await signInAndAllow(page, patient, '');
      await page.waitForURL(`${appServer.origin}/app/index.html**`);
      const status = await appStatus(page);
      expect(status.error).toBeUndefined();
      expect(status).toMatchObject({ done: true, patient: panelPatientId, count: 2, refreshed: true });
      expect(String(status.fhirUser)).toContain(`Patient/${panelPatientId}`);
      const items = await page.locator('#observations li').allTextContents();
      expect(items.sort()).toEqual(['Body weight: 70 kg', 'Heart rate: 62 /min']);
    });
  });

  it("completes a practitioner launch with user/*.rs and lists their patient's Observations", async () => {
    await withBrowser(true, async (page) => {
      await page.goto(`${appServer.origin}/app/index.html`);
      await page.evaluate((s) => sessionStorage.setItem('subject', s), `Patient/${panelPatientId}`);
      await page.goto(`${appServer.origin}/app/launch-practitioner.html`);
      await signInAndAllow(page, practitioner, '-practitioner');
      await page.waitForURL(`${appServer.origin}/app/index.html**`);
      const status = await appStatus(page);
      expect(status.error).toBeUndefined();
      expect(status).toMatchObject({ done: true, patient: null, count: 2, refreshed: null });
      expect(String(status.scope).split(' ').sort()).toEqual(['fhirUser', 'openid', 'user/*.rs']);
    });
  });

  it('completes a patient launch whose iss ends in a slash (review R2)', async () => {
    await withBrowser(true, async (page) => {
      await page.goto(`${appServer.origin}/app/launch-slash.html`);
      await signInAndAllow(page, patient, '-slash');
      await page.waitForURL(`${appServer.origin}/app/index.html**`);
      const status = await appStatus(page);
      expect(status.error).toBeUndefined();
      expect(status).toMatchObject({ done: true, patient: panelPatientId, count: 2 });
    });
  });

  it('lets a person sign in and consent with scripts off (plain forms)', async () => {
    const { challenge } = pkcePair();
    const redirectUri = `${appServer.origin}/app/callback`;
    const url = authorizeUrl(gw, {
      clientId: app.client_id,
      redirectUri,
      scope: 'launch/patient patient/*.rs',
      challenge,
    });
    await withBrowser(false, async (page) => {
      await page.goto(url);
      await page.fill('#email', patient.email);
      await page.fill('#password', patient.password);
      await page.click('button[type=submit]');
      await page.click('button[value=allow]');
      await page.waitForURL(`${redirectUri}?**`);
      const landed = new URL(page.url());
      expect(landed.searchParams.get('code')).toBeTruthy();
      expect(landed.searchParams.get('state')).toBe('state-123');
    });
  });
});
