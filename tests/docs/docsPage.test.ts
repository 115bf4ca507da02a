import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOCS_CONTENT_SECURITY_POLICY } from '../../src/docs/docsController.js';
import { CHROMIUM_FLAGS, findChromium } from '../helpers/chromium.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

/**
 * GET /docs: Swagger UI served by the gateway itself. The browser test renders it in headless
 * Chromium with every request outside the gateway refused, so a CDN dependency would show.
 */

const SCREENSHOT = 'test-artifacts/docs-page.png';
const TRY_IT_OUT_SCREENSHOT = 'test-artifacts/docs-try-it-out.png';

const chromiumPath = findChromium('the /docs rendering test');

describe('GET /docs', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(() => gw.close());

  it('serves a page that loads only same-origin scripts and styles, under a self-only CSP', async () => {
    const response = await gw.call('/docs');
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/html/);
    expect(response.headers.get('content-security-policy')).toBe(DOCS_CONTENT_SECURITY_POLICY);
    expect(DOCS_CONTENT_SECURITY_POLICY).not.toMatch(/unsafe|https?:|\*/);
    const html = await response.text();
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
    expect(html).not.toMatch(/<script>|<style|\sstyle=|\son\w+=/);
    const assets = [...html.matchAll(/(?:src|href)="(docs\/assets\/[^"]+)"/g)].map((m) => m[1]);
    expect(assets).toEqual(
      expect.arrayContaining([
        'docs/assets/swagger-ui.css',
        'docs/assets/swagger-ui-bundle.js',
        'docs/assets/swagger-init.js',
      ]),
    );
  });

  it('redirects /docs/ to /docs with a relative Location, so a proxy path prefix is kept', async () => {
    const response = await gw.call('/docs/', { redirect: 'manual' });
    expect(response.status).toBe(301);
    expect(response.headers.get('location')).toBe('../docs');
    expect(new URL('../docs', `${gw.url}/docs/`).href).toBe(`${gw.url}/docs`);
    expect(new URL('../docs', 'https://proxy.example/api/docs/').href).toBe('https://proxy.example/api/docs');
    const followed = await gw.call('/docs/');
    expect(followed.status).toBe(200);
    expect(followed.url).toBe(`${gw.url}/docs`);
  });

  it('names a relative server in /openapi.json, so Try it out calls the origin the page came from', async () => {
    // the configured public URL (http://gateway.test here) is another origin than the one the browser uses
    expect(gw.deps.config.publicBaseUrl).not.toBe(gw.url);
    const doc = (await (await gw.call('/openapi.json')).json()) as { servers: { url: string }[] };
    expect(doc.servers.map((server) => server.url)).toEqual(['.']);
  });

  it('serves its assets from the gateway, cacheable, with types that nosniff accepts', async () => {
    const expected: Record<string, RegExp> = {
      '/docs/assets/swagger-ui-bundle.js': /^text\/javascript/,
      '/docs/assets/swagger-init.js': /^text\/javascript/,
      '/docs/assets/swagger-ui.css': /^text\/css/,
      '/docs/assets/favicon-32x32.png': /^image\/png$/,
    };
    for (const [asset, type] of Object.entries(expected)) {
      const response = await gw.call(asset);
      expect(response.status, asset).toBe(200);
      expect(response.headers.get('content-type'), asset).toMatch(type);
      expect(response.headers.get('cache-control'), asset).toBe('public, max-age=3600');
      const etag = response.headers.get('etag');
      expect(etag, asset).toMatch(/^"[\w-]+"$/);
      await response.arrayBuffer();
      const again = await gw.call(asset, { headers: { 'if-none-match': etag! } });
      expect(again.status, asset).toBe(304);
    }
    // nothing else from node_modules is reachable
    for (const other of [
      '/docs/assets/index.html',
      '/docs/assets/swagger-initializer.js',
      '/docs/assets/../package.json',
    ]) {
      expect((await gw.call(other)).status, other).toBe(404);
    }
  });

  it.skipIf(!chromiumPath)(
    'renders the endpoints in headless Chromium at 127.0.0.1 and runs a Try it out, with the network outside the gateway blocked',
    async () => {
      const { chromium } = await import('playwright-core');
      const browser = await chromium.launch({
        executablePath: chromiumPath!,
        args: CHROMIUM_FLAGS,
      });
      try {
        const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
        const outside: string[] = [];
        const problems: string[] = [];
        const isLocal = (url: string) => {
          const { protocol, hostname } = new URL(url);
          return !/^https?:$/.test(protocol) || hostname === '127.0.0.1' || hostname === 'localhost';
        };
        await context.route('**/*', (route) => {
          const url = route.request().url();
          if (isLocal(url)) return route.continue();
          outside.push(url);
          return route.abort('blockedbyclient');
        });
        const page = await context.newPage();
        page.on('request', (request) => {
          if (!isLocal(request.url())) outside.push(request.url());
        });
        page.on('console', (message) => {
          if (message.type() === 'error') problems.push(message.text());
        });
        page.on('pageerror', (error) => problems.push(error.message));

        const response = await page.goto(`${gw.url}/docs`, { waitUntil: 'load' });
        expect(response?.status()).toBe(200);
        await page.waitForSelector('.opblock-summary-path', { timeout: 20_000 });
        const paths = await page.$$eval('.opblock-summary-path', (elements) =>
          elements.map((e) => e.textContent?.replace(/\u200b/g, '').trim()),
        );
        expect(paths).toEqual(
          expect.arrayContaining([
            '/auth/login',
            '/auth/signup',
            '/fhir/patient',
            '/admin/users',
            '/healthz',
          ]),
        );
        const title = await page.textContent('.info .title');
        expect(title).toContain(`${gw.deps.config.appName} API`);
        expect(await page.textContent('.info .description')).toContain('/fhir/metadata');

        fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
        await page.screenshot({ path: SCREENSHOT, fullPage: true });
        expect(fs.statSync(SCREENSHOT).size).toBeGreaterThan(10_000);

        expect(outside, 'requests outside the gateway').toEqual([]);
        // CSP violations and script errors are reported on the console
        expect(problems).toEqual([]);

        // Try it out at 127.0.0.1 (the README's address): GET /readyz runs from the page, under its CSP
        expect(new URL(gw.url).hostname).toBe('127.0.0.1');
        const readyz = page.locator('.opblock-get', {
          has: page.locator('.opblock-summary-path[data-path="/readyz"]'),
        });
        await readyz.locator('.opblock-summary').first().click();
        await readyz.locator('button.try-out__btn').click();
        const answered = page.waitForResponse((r) => r.url() === `${gw.url}/readyz`);
        await readyz.locator('button.execute').click();
        expect((await answered).status()).toBe(200);
        const live = readyz.locator('.live-responses-table tr.response');
        await expect
          .poll(async () => (await live.locator('.response-col_status').first().textContent())?.trim())
          .toBe('200');
        expect(await readyz.locator('.request-url pre').textContent()).toBe(`${gw.url}/readyz`);
        expect(await live.locator('.response-col_description').first().textContent()).toContain('"ready"');
        await page.screenshot({ path: TRY_IT_OUT_SCREENSHOT, fullPage: true });
        expect(outside, 'requests outside the gateway').toEqual([]);
        expect(problems).toEqual([]);

        // /docs/ in the address bar lands on the same working page
        const slash = await context.newPage();
        await slash.goto(`${gw.url}/docs/`, { waitUntil: 'load' });
        expect(slash.url()).toBe(`${gw.url}/docs`);
        await slash.waitForSelector('.opblock-summary-path', { timeout: 20_000 });
        await slash.close();

        // the guard itself works: a request to another host is recorded and never leaves
        const probe = await context.newPage();
        await expect(probe.goto('https://cdn.example.invalid/swagger-ui.js')).rejects.toThrow();
        expect(outside).toContain('https://cdn.example.invalid/swagger-ui.js');
      } finally {
        await browser.close();
      }
    },
    90_000,
  );
});
