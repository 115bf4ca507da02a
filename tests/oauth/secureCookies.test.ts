import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { launch, pkcePair, registerApp } from '../helpers/smart.js';

/**
 * The SMART pages' cookies (the interaction, the login session, the resume) are `Secure` whenever
 * the gateway's public address is https, whether or not the request says so: behind a TLS proxy
 * without TRUST_PROXY, or reached past it, they went out without the flag and a browser would
 * send them over plain http to the same host.
 */
describe.each([
  ['https://gateway.test', true],
  ['http://gateway.test', false],
] as const)('SMART cookies with PUBLIC_BASE_URL %s', (publicBaseUrl, secure) => {
  let gw: TestGateway;

  beforeAll(async () => {
    gw = await startTestGateway({ env: { PUBLIC_BASE_URL: publicBaseUrl } });
  });

  afterAll(() => gw.close());

  it(`are ${secure ? '' : 'not '}Secure through a whole launch made over plain http`, async () => {
    const app = await registerApp(gw, { redirect_uris: ['http://127.0.0.1:9/app/callback'] });
    const patient = await gw.seedUser({ role: 'patient' });
    const { challenge } = pkcePair();
    // authorize, the login page, consent and the resume that issues the code
    const result = await launch(gw, patient, {
      clientId: app.client_id,
      redirectUri: app.redirect_uris[0]!,
      scope: 'launch/patient openid fhirUser patient/Observation.rs',
      challenge,
    });
    expect(result.code, result.location).toBeTruthy();
    const cookies = result.browser.setCookies;
    expect(cookies.length).toBeGreaterThan(2);
    for (const cookie of cookies) expect(/;\s*secure\b/i.test(cookie), cookie).toBe(secure);
  });
});
