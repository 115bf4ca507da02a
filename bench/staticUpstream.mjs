// A static FHIR upstream for `npm run bench`: prebuilt answers, no logic, so what is measured is
// the proxy in front of it. Searches answer a 20-entry searchset Bundle (~26 KB) of one
// patient's Observations, reads answer the Patient, writes answer 201, a batch its batch-response.
// A practitioner's search (narrowed to their panel: `general-practitioner` in the query) answers
// 20 Observations of 20 patients of the panel, the next 20 patients on each request, and a
// `Patient?_id=` search those patients, each naming the practitioner. Plain JS: no loader cost.
import http from 'node:http';

const port = Number(process.env.PORT ?? 0);
// the address it listens on (set once listening): its links must name it, as a real server's do,
// or the gateway neither rewrites them nor pages (with PORT=0 they named port 0 until 2026-12-06)
let base = '';
const PATIENT = process.env.BENCH_PATIENT_ID ?? 'bench-patient-1';
const practitioner = 'bench-practitioner-1';
/** The practitioner's patients (a GP has 1,500–2,500), 20 on each page of their searches. */
const PANEL_SIZE = Number(process.env.BENCH_PANEL_SIZE ?? 2000);
const PAGE = 20;
if (!Number.isInteger(PANEL_SIZE) || PANEL_SIZE < PAGE)
  throw new Error(`BENCH_PANEL_SIZE must be a whole number of at least ${PAGE}`);

const observation = (i, subject = PATIENT, id = `obs-${i}`) => ({
  resourceType: 'Observation',
  id,
  meta: { versionId: '1', lastUpdated: '2026-11-20T09:30:00.000Z' },
  status: 'final',
  category: [
    {
      coding: [
        {
          system: 'http://terminology.hl7.org/CodeSystem/observation-category',
          code: 'vital-signs',
          display: 'Vital Signs',
        },
      ],
    },
  ],
  code: {
    coding: [
      {
        system: 'http://loinc.org',
        code: '85354-9',
        display: 'Blood pressure panel with all children optional',
      },
    ],
    text: 'Blood pressure',
  },
  subject: { reference: `Patient/${subject}` },
  effectiveDateTime: new Date(Date.UTC(2026, 10, 1 + i, 9, 30)).toISOString(),
  issued: new Date(Date.UTC(2026, 10, 1 + i, 10, 0)).toISOString(),
  performer: [{ reference: `Practitioner/${practitioner}`, display: 'Dr Bench' }],
  interpretation: [
    {
      coding: [
        {
          system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation',
          code: 'N',
          display: 'Normal',
        },
      ],
    },
  ],
  component: [
    {
      code: { coding: [{ system: 'http://loinc.org', code: '8480-6', display: 'Systolic blood pressure' }] },
      valueQuantity: { value: 110 + i, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
      referenceRange: [{ low: { value: 90, unit: 'mmHg' }, high: { value: 130, unit: 'mmHg' } }],
    },
    {
      code: { coding: [{ system: 'http://loinc.org', code: '8462-4', display: 'Diastolic blood pressure' }] },
      valueQuantity: { value: 70 + i, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
      referenceRange: [{ low: { value: 60, unit: 'mmHg' }, high: { value: 85, unit: 'mmHg' } }],
    },
  ],
  note: [{ text: 'Measured seated after five minutes of rest, left arm, adult cuff.' }],
});

function bundleText() {
  return JSON.stringify({
    resourceType: 'Bundle',
    id: 'bench-search',
    type: 'searchset',
    total: 60,
    link: [
      { relation: 'self', url: `${base}/Observation?subject=Patient/${PATIENT}&_count=20` },
      { relation: 'next', url: `${base}?_getpages=bench-search&_getpagesoffset=20&_count=20` },
    ],
    entry: Array.from({ length: 20 }, (_, i) => ({
      fullUrl: `${base}/Observation/obs-${i}`,
      resource: observation(i),
      search: { mode: 'match' },
    })),
  });
}

/** Page `page` of the practitioner's search: one Observation of each of the panel's next 20 patients. */
function panelPageText(page) {
  return JSON.stringify({
    resourceType: 'Bundle',
    id: `bench-panel-${page}`,
    type: 'searchset',
    total: PANEL_SIZE,
    link: [
      { relation: 'self', url: `${base}/Observation?_count=${PAGE}` },
      { relation: 'next', url: `${base}?_getpages=bench-panel&_getpagesoffset=${PAGE}&_count=${PAGE}` },
    ],
    entry: Array.from({ length: PAGE }, (_, i) => {
      const id = `obs-panel-${page}-${i}`;
      return {
        fullUrl: `${base}/Observation/${id}`,
        resource: observation(i, `panel-${(page * PAGE + i) % PANEL_SIZE}`, id),
        search: { mode: 'match' },
      };
    }),
  });
}

/** `Patient?_id=a,b,c`: each asked patient of the panel, naming the practitioner (the gateway's panel check). */
function panelPatientsText(url) {
  const ids = (new URL(url, base).searchParams.get('_id') ?? '').split(',');
  const entry = ids
    .filter((id) => id.startsWith('panel-'))
    .map((id) => ({
      fullUrl: `${base}/Patient/${id}`,
      resource: {
        resourceType: 'Patient',
        id,
        name: [{ family: 'Panel', given: [id] }],
        generalPractitioner: [{ reference: `Practitioner/${practitioner}` }],
      },
      search: { mode: 'match' },
    }));
  return JSON.stringify({ resourceType: 'Bundle', type: 'searchset', total: entry.length, entry });
}

const patientText = () =>
  JSON.stringify({
    resourceType: 'Patient',
    id: PATIENT,
    meta: { versionId: '1', lastUpdated: '2026-11-20T09:30:00.000Z' },
    identifier: [{ system: 'urn:oid:1.2.36.146.595.217.0.1', value: '12345' }],
    active: true,
    name: [{ use: 'official', family: 'Bench', given: ['Patient'] }],
    telecom: [{ system: 'email', value: 'bench-patient@example.com' }],
    gender: 'female',
    birthDate: '1980-04-12',
    generalPractitioner: [{ reference: `Practitioner/${practitioner}` }],
  });

let bundle = '';
let patient = '';
let panelPages = [];
let panelPagesServed = 0;
const capability = JSON.stringify({
  resourceType: 'CapabilityStatement',
  status: 'active',
  kind: 'instance',
  fhirVersion: '4.0.1',
  format: ['json'],
  rest: [{ mode: 'server', resource: [{ type: 'Patient' }, { type: 'Observation' }] }],
});
const json = { 'content-type': 'application/fhir+json;charset=utf-8' };

let created = 0;
/** A batch's batch-response: every entry created (R4 http.html#transaction-response). */
const batchResponse = (batch) => ({
  resourceType: 'Bundle',
  type: 'batch-response',
  entry: (batch.entry ?? []).map((entry) => {
    const type = entry.resource?.resourceType ?? 'Resource';
    return {
      response: { status: '201 Created', location: `${type}/${type.toLowerCase()}-${++created}/_history/1` },
    };
  }),
});

http
  .createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const url = req.url ?? '';
      if (req.method === 'POST') {
        const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
        // the gateway mirrors its audit trail as batches of AuditEvents (src/audit/auditEventLane.ts):
        // answered as a FHIR server does, or every login's event failed and was retried, logged each time
        if (body.resourceType === 'Bundle' && body.type === 'batch') {
          const text = JSON.stringify(batchResponse(body));
          res.writeHead(200, { ...json, 'content-length': Buffer.byteLength(text) });
          res.end(text);
          return;
        }
        const type = body.resourceType ?? 'Resource';
        // the provisioned accounts get fixed ids the prebuilt answers name
        const email = body.telecom?.find((t) => t.system === 'email')?.value ?? '';
        // the bench patient gets the id the prebuilt answers name; every other account one of its own
        const id =
          type === 'Patient'
            ? email === 'bench-patient@example.com'
              ? PATIENT
              : `p-${email.replace(/[^a-z0-9]/g, '')}`.slice(0, 64)
            : type === 'Practitioner'
              ? practitioner
              : `${type.toLowerCase()}-${Date.now()}`;
        const stored = { ...body, id, meta: { versionId: '1', lastUpdated: new Date().toISOString() } };
        const text = JSON.stringify(stored);
        res.writeHead(201, {
          ...json,
          location: `${base}/${type}/${id}/_history/1`,
          etag: 'W/"1"',
          'content-length': Buffer.byteLength(text),
        });
        res.end(text);
        return;
      }
      let text;
      if (url.includes('/metadata')) text = capability;
      else if (/\/Patient\/[^/?]+/.test(url)) text = patient;
      else if (/\/Practitioner\/[^/?]+/.test(url))
        text = JSON.stringify({
          resourceType: 'Practitioner',
          id: practitioner,
          name: [{ family: 'Bench' }],
        });
      else if (url.includes('identifier='))
        text = JSON.stringify({ resourceType: 'Bundle', type: 'searchset', total: 0, entry: [] });
      // only what the bench asks: a practitioner's Observation search, the gateway's panel lookups
      else if (url.includes('/Observation?') && url.includes('general-practitioner'))
        text = panelPages[panelPagesServed++ % panelPages.length];
      else if (/\/Patient\?(.*&)?_id=/.test(url)) text = panelPatientsText(url);
      else text = bundle;
      res.writeHead(200, { ...json, etag: 'W/"1"', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  })
  .listen(port, '127.0.0.1', function () {
    base = `http://127.0.0.1:${this.address().port}/fhir`;
    bundle = bundleText();
    patient = patientText();
    panelPages = Array.from({ length: Math.ceil(PANEL_SIZE / PAGE) }, (_, page) => panelPageText(page));
    console.log(
      JSON.stringify({
        ready: true,
        port: this.address().port,
        bundleBytes: Buffer.byteLength(bundle),
        patientBytes: Buffer.byteLength(patient),
        panelPageBytes: Buffer.byteLength(panelPages[0]),
      }),
    );
  });
