import { afterAll, describe, expect, it } from 'vitest';
import { ADMIN_EMAIL, ADMIN_PASSWORD, tempDir } from '../helpers/gateway.js';
import { startHapiUpstream } from '../helpers/hapiUpstream.js';
import { type RunningProcess, startGatewayProcess, startStandaloneFhir } from '../helpers/processes.js';

/**
 * The gateway as it is deployed: a fresh process (`npm start`) in front of a FHIR server that
 * was started separately — and nothing created through the gateway yet. Every /fhir read must
 * work at once (the R4 definitions load at boot, not on the first admin create).
 */

const running: { kill(): Promise<void> }[] = [];
afterAll(async () => {
  for (const r of running.reverse()) await r.kill();
});

const WORKERS = 2;

async function readThroughFreshGateway(fhirEnv: Record<string, string>) {
  const gateway = await startGatewayProcess({
    DATA_DIR: tempDir('ff-ext-gw-'),
    // as deployed on a multi-core host: a primary and two serving processes (src/cluster.ts)
    WORKERS: String(WORKERS),
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    LOG_LEVEL: 'warn',
    ...fhirEnv,
  });
  running.push(gateway.proc);
  const login = await fetch(`${gateway.url}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD }),
  });
  const { token } = (await login.json()) as { token: string };
  const statuses: Record<string, number> = {};
  for (const path of [
    '/fhir/metadata',
    '/fhir/Patient?_count=1',
    '/fhir/Observation?_count=1',
    '/fhir/Practitioner',
  ]) {
    statuses[path] = (
      await fetch(`${gateway.url}${path}`, { headers: { authorization: `Bearer ${token}` } })
    ).status;
  }
  return { statuses, proc: gateway.proc };
}

describe('a gateway started in a fresh process in front of an external FHIR server', () => {
  it('reads through /fhir before anything was created (npm run fhir as the upstream)', async () => {
    const fhir = await startStandaloneFhir(tempDir('ff-ext-fhir-'));
    running.push(fhir.proc as RunningProcess);
    const { statuses, proc } = await readThroughFreshGateway({ FHIR_BASE_URL: fhir.baseUrl });
    expect(statuses).toEqual({
      '/fhir/metadata': 200,
      '/fhir/Patient?_count=1': 200,
      '/fhir/Observation?_count=1': 200,
      '/fhir/Practitioner': 200,
    });
    expect(proc.output()).not.toMatch(/"level":(50|60)/);
  }, 90_000);

  it('reads through /fhir in front of the HAPI-flavoured server with client-credentials auth', async () => {
    const hapi = await startHapiUpstream();
    running.push({ kill: () => hapi.close() });
    const { statuses } = await readThroughFreshGateway(hapi.gatewayEnv);
    expect(Object.values(statuses)).toEqual([200, 200, 200, 200]);
    // each serving process fetches one token and reuses it: never one per request
    expect(hapi.tokensIssued()).toBeGreaterThanOrEqual(1);
    expect(hapi.tokensIssued()).toBeLessThanOrEqual(WORKERS);
  }, 90_000);
});
