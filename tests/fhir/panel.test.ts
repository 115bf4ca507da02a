import type { Bundle, Observation, Patient } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedFhirServer } from '../../src/fhir/embedded/server.js';
import { startFakeUpstream } from '../helpers/fakeUpstream.js';
import { startTestGateway, type TestGateway, tempDir, UPSTREAMS } from '../helpers/gateway.js';
import { provision, signup } from '../helpers/journey.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * A practitioner with a real panel (2,000 assigned patients, as a GP has): every path answers,
 * nothing is enumerated in an upstream URL, and nothing of another practitioner's patients
 * leaves — also from an upstream that ignores the narrowing.
 */

const PANEL = 2_000;
const WITH_OBSERVATIONS = 60;
const PASSWORD = 'a long and plain passphrase';

function observation(patientId: string): Observation {
  return {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    subject: { reference: `Patient/${patientId}` },
    valueQuantity: { value: 70, unit: '/min' },
  };
}

/** Creates resources directly on the FHIR server in transaction Bundles of 500, returning their ids. */
async function seed(gw: TestGateway, resources: (Patient | Observation)[]): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < resources.length; i += 500) {
    const chunk = resources.slice(i, i + 500);
    const result = await gw.deps.fhir.forward({
      method: 'POST',
      path: '',
      body: {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: chunk.map((resource) => ({
          resource,
          request: { method: 'POST', url: resource.resourceType },
        })),
      },
    });
    const entries = (result.body as Bundle).entry ?? [];
    for (const entry of entries)
      ids.push(entry.response?.location?.split('/')[1] ?? entry.resource?.id ?? '');
  }
  return ids;
}

describe.each(UPSTREAMS)(
  'a practitioner with %i assigned patients, %s upstream'.replace('%i', String(PANEL)),
  (upstream) => {
    let gw: TestGateway;
    let smtp: SmtpCapture;
    let tokenP: string;
    let mine: string[];
    let theirs: string[];
    let theirObservations: string[];
    let otherGp: string;

    const call = async (path: string, token = tokenP) => {
      const response = await gw.call(path, { token });
      return { status: response.status, text: await response.text() };
    };

    beforeAll(async () => {
      smtp = await startSmtpCapture();
      gw = await startTestGateway({ upstream, env: { SMTP_URL: smtp.url } });
      const p = await provision(gw, smtp, 'gp-panel@example.com', 'practitioner');
      const q = await provision(gw, smtp, 'gp-other@example.com', 'practitioner');
      otherGp = q.fhirId;
      const signedUp = await signup(gw, { email: p.email, access_code: p.code, password: PASSWORD });
      tokenP = ((await signedUp.json()) as { token: string }).token;
      const patient = (gp: string, i: number): Patient => ({
        resourceType: 'Patient',
        name: [{ family: `Panel${i}` }],
        generalPractitioner: [{ reference: `Practitioner/${gp}` }],
      });
      mine = await seed(
        gw,
        Array.from({ length: PANEL }, (_, i) => patient(p.fhirId, i)),
      );
      theirs = await seed(
        gw,
        Array.from({ length: 20 }, (_, i) => patient(q.fhirId, i)),
      );
      await seed(gw, mine.slice(0, WITH_OBSERVATIONS).map(observation));
      theirObservations = await seed(gw, theirs.map(observation));
    }, 120_000);

    afterAll(async () => {
      await gw.close();
      await smtp.close();
    });

    it('searches, reads and pages Observations of the panel only', async () => {
      const seen: string[] = [];
      let path: string | undefined = '/fhir/Observation?_count=25';
      while (path) {
        const page = await call(path);
        expect(page.status).toBe(200);
        const bundle = JSON.parse(page.text) as Bundle<Observation>;
        for (const entry of bundle.entry ?? []) seen.push(entry.resource?.subject?.reference ?? '');
        const next: string | undefined = bundle.link?.find((l) => l.relation === 'next')?.url;
        path = next ? next.slice(next.indexOf('/fhir/')) : undefined;
      }
      expect(seen).toHaveLength(WITH_OBSERVATIONS);
      expect(seen.every((ref) => mine.includes(ref.split('/')[1] ?? ''))).toBe(true);
      expect((await call(`/fhir/Observation/${theirObservations[0]}`)).status).toBe(404);
      expect(
        JSON.parse((await call(`/fhir/Observation?subject=Patient/${theirs[0]}`)).text).entry ?? [],
      ).toEqual([]);
    });

    it('lists every assigned patient through /practitioner/patients and /fhir/Patient', async () => {
      const listed = new Set<string>();
      let cursor: string | null = null;
      do {
        const page = await call(`/practitioner/patients?limit=100${cursor ? `&cursor=${cursor}` : ''}`);
        expect(page.status).toBe(200);
        const body = JSON.parse(page.text) as { patients: { id: string }[]; next_cursor: string | null };
        for (const p of body.patients) listed.add(p.id);
        cursor = body.next_cursor;
      } while (cursor);
      expect(listed.size).toBe(PANEL);
      expect(theirs.some((id) => listed.has(id))).toBe(false);
      // a FHIR server need not count unless asked (HAPI FHIR does not): ask, and the gateway keeps the total
      const fhirPage = JSON.parse(
        (await call('/fhir/Patient?_count=20&_total=accurate')).text,
      ) as Bundle<Patient>;
      expect(fhirPage.entry).toHaveLength(20);
      expect(fhirPage.total).toBe(PANEL);
    });

    it('never sends an upstream request line over 8 KB', () => {
      if (!gw.hapi) return; // request lines are visible at the HAPI-flavoured front
      const longest = Math.max(...gw.hapi.requestLines.map((line) => Buffer.byteLength(line)));
      expect(longest).toBeLessThan(8 * 1024);
    });

    it('stops showing a patient at once when an admin moves them to another practitioner through the gateway', async () => {
      const moved = mine[0] as string;
      const obs = JSON.parse((await call(`/fhir/Observation?subject=Patient/${moved}`)).text) as Bundle;
      expect(obs.entry?.length).toBe(1);
      const admin = await gw.adminToken();
      const record = JSON.parse((await call(`/fhir/Patient/${moved}`, admin)).text) as Patient;
      const put = await gw.call(`/fhir/Patient/${moved}`, {
        method: 'PUT',
        token: admin,
        headers: { 'content-type': 'application/fhir+json' },
        // another practitioner that exists: a real FHIR server refuses a reference to a missing one
        body: JSON.stringify({ ...record, generalPractitioner: [{ reference: `Practitioner/${otherGp}` }] }),
      });
      expect(put.status).toBe(200);
      expect((await call(`/fhir/Patient/${moved}`)).status).toBe(404);
      const observationId = obs.entry?.[0]?.resource?.id;
      expect((await call(`/fhir/Observation/${observationId}`)).status).toBe(404);
    });

    it('stops showing a patient at once when an admin moves them in a transaction Bundle', async () => {
      const moved = mine[1] as string;
      const obs = JSON.parse((await call(`/fhir/Observation?subject=Patient/${moved}`)).text) as Bundle;
      const observationId = obs.entry?.[0]?.resource?.id;
      // read once, so the panel cache holds the patient as ours
      expect((await call(`/fhir/Observation/${observationId}`)).status).toBe(200);
      const admin = await gw.adminToken();
      const record = JSON.parse((await call(`/fhir/Patient/${moved}`, admin)).text) as Patient;
      const transaction = await gw.call('/fhir', {
        method: 'POST',
        token: admin,
        headers: { 'content-type': 'application/fhir+json' },
        body: JSON.stringify({
          resourceType: 'Bundle',
          type: 'transaction',
          entry: [
            {
              resource: { ...record, generalPractitioner: [{ reference: `Practitioner/${otherGp}` }] },
              request: { method: 'PUT', url: `Patient/${moved}` },
            },
          ],
        }),
      });
      expect(transaction.status).toBe(200);
      expect((await call(`/fhir/Observation/${observationId}`)).status).toBe(404);
    });
  },
);

/** A proxy's request (`/fhir/R4/...`, `url` as it may have changed it) sent on to the real server; `answered` runs before the answer is relayed. */
function relay(
  realBase: string,
  url: URL,
  req: { method: string; body?: string | undefined },
  res: import('node:http').ServerResponse,
  answered?: () => void,
): void {
  const target = `${realBase}${url.pathname.replace(/^\/fhir\/R4/, '')}${url.search}`;
  fetch(target, {
    method: req.method,
    headers: { 'content-type': 'application/fhir+json' },
    ...(req.body ? { body: req.body } : {}),
  }).then(async (answer) => {
    const text = await answer.text();
    answered?.();
    res.writeHead(answer.status, { 'content-type': 'application/fhir+json' }).end(text);
  });
}

describe('a practitioner behind an upstream that ignores the panel narrowing', () => {
  it('still gets nothing of patients outside the panel', async () => {
    const smtp = await startSmtpCapture();
    const real = await startEmbeddedFhirServer({ dataDir: tempDir() });
    // the same FHIR server behind a proxy that drops every general-practitioner filter
    const careless = await startFakeUpstream((req, res) => {
      const url = new URL(req.url, 'http://x');
      for (const name of [...url.searchParams.keys()])
        if (name.includes('general-practitioner')) url.searchParams.delete(name);
      relay(real.baseUrl, url, req, res);
    });
    const gw = await startTestGateway({
      env: { SMTP_URL: smtp.url, FHIR_BASE_URL: `${careless.url}/fhir/R4` },
    });
    try {
      const p = await provision(gw, smtp, 'careless-gp@example.com', 'practitioner');
      const q = await provision(gw, smtp, 'other-gp@example.com', 'practitioner');
      const token = (
        (await (await signup(gw, { email: p.email, access_code: p.code, password: PASSWORD })).json()) as {
          token: string;
        }
      ).token;
      const patient = (gp: string): Patient => ({
        resourceType: 'Patient',
        name: [{ family: 'Careless' }],
        generalPractitioner: [{ reference: `Practitioner/${gp}` }],
      });
      const [ownPatient = ''] = await seed(gw, [patient(p.fhirId)]);
      const [otherPatient = ''] = await seed(gw, [patient(q.fhirId)]);
      await seed(gw, [observation(ownPatient), observation(otherPatient)]);

      const patients = (await (await gw.call('/fhir/Patient', { token })).json()) as Bundle<Patient>;
      expect(patients.entry?.map((e) => e.resource?.id)).toEqual([ownPatient]);
      const observations = (await (
        await gw.call('/fhir/Observation', { token })
      ).json()) as Bundle<Observation>;
      expect(observations.entry?.map((e) => e.resource?.subject?.reference)).toEqual([
        `Patient/${ownPatient}`,
      ]);
      const slim = (await (await gw.call('/practitioner/patients', { token })).json()) as {
        patients: { id: string }[];
      };
      expect(slim.patients.map((x) => x.id)).toEqual([ownPatient]);

      // one patient's slim observations: the panel lookup (cached) decides, not a Patient read
      const gets = (from: number) =>
        careless.requests
          .slice(from)
          .filter((r) => r.method === 'GET')
          .map((r) => new URL(r.url, 'http://x').pathname);
      const ownPath = `/practitioner/patients/${ownPatient}/observations`;
      expect((await gw.call(ownPath, { token })).status).toBe(200);
      const before = careless.requests.length;
      const again = (await (await gw.call(ownPath, { token })).json()) as { observations: unknown[] };
      expect(again.observations).toHaveLength(1);
      expect(gets(before)).toEqual(['/fhir/R4/Observation']);
      const afterOwn = careless.requests.length;
      expect((await gw.call(`/practitioner/patients/${otherPatient}/observations`, { token })).status).toBe(
        404,
      );
      expect(gets(afterOwn)).not.toContain('/fhir/R4/Observation');
    } finally {
      await gw.close();
      await careless.close();
      await real.close();
      await smtp.close();
    }
  });
});

describe("a practitioner behind a server slow to answer the panel's lookups", () => {
  it('asks a few lookups at once, and answers within one FHIR timeout (504 past it, the cache filled for the next request)', async () => {
    const smtp = await startSmtpCapture();
    const real = await startEmbeddedFhirServer({ dataDir: tempDir() });
    let delayMs = 0;
    let asking = 0;
    let mostAtOnce = 0;
    const slow = await startFakeUpstream((req, res) => {
      const url = new URL(req.url, 'http://x');
      const lookup = req.method === 'GET' && url.pathname.endsWith('/Patient') && url.searchParams.has('_id');
      if (!lookup) return relay(real.baseUrl, url, req, res);
      asking++;
      mostAtOnce = Math.max(mostAtOnce, asking);
      setTimeout(() => relay(real.baseUrl, url, req, res, () => asking--), delayMs);
    });
    const timeoutMs = 2_000;
    const gw = await startTestGateway({
      env: { SMTP_URL: smtp.url, FHIR_BASE_URL: `${slow.url}/fhir/R4`, FHIR_TIMEOUT_MS: String(timeoutMs) },
    });
    try {
      const p = await provision(gw, smtp, 'slow-gp@example.com', 'practitioner');
      const token = (
        (await (await signup(gw, { email: p.email, access_code: p.code, password: PASSWORD })).json()) as {
          token: string;
        }
      ).token;
      // 300 patients on one page: six lookups of 50
      const patients = await seed(
        gw,
        Array.from({ length: 300 }, (_, i) => ({
          resourceType: 'Patient' as const,
          name: [{ family: `Slow${i}` }],
          generalPractitioner: [{ reference: `Practitioner/${p.fhirId}` }],
        })),
      );
      await seed(gw, patients.map(observation));
      const page = async () => {
        const started = Date.now();
        const response = await gw.call('/fhir/Observation?_count=300', { token });
        const body = (await response.json()) as Bundle;
        return { status: response.status, entries: body.entry?.length, ms: Date.now() - started };
      };

      // each lookup well inside the timeout: one after another they took 6 × 600 ms
      delayMs = 600;
      const answered = await page();
      expect(answered).toMatchObject({ status: 200, entries: 300 });
      expect(mostAtOnce).toBe(4);
      expect(answered.ms).toBeLessThan(timeoutMs);

      // each inside the timeout, all of them past it: 504 after one timeout, not six
      await gw.deps.panels.forgetAll();
      delayMs = 1_500;
      const late = await page();
      expect(late.status).toBe(504);
      expect(late.ms).toBeLessThan(2 * timeoutMs);
      // the lookups still running fill the cache: the next request asks none
      await new Promise((r) => setTimeout(r, 2 * delayMs));
      expect(await page()).toMatchObject({ status: 200, entries: 300 });
    } finally {
      await gw.close();
      await slow.close();
      await real.close();
      await smtp.close();
    }
  }, 60_000);
});
