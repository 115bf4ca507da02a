import type { Patient } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Role } from '../../db/schema.js';
import type { TestGateway } from '../helpers/gateway.js';
import { type RegisteredApp, registerApp, smartTokens, startSmartGateway } from '../helpers/smart.js';

/**
 * Scopes at the /fhir passthrough of a started gateway: a table of scope × request × status.
 * The scopes narrow the role's compartment, never widen it: a patient's `patient/*.rs` still sees
 * only their own record, a practitioner's `user/Observation.crus` writes only for their patients.
 * A refusal for want of a scope is a 403 OperationOutcome naming the missing scope.
 */

interface Ids {
  me: string;
  myObservation: string;
  otherObservation: string;
  panelPatient: string;
  panelObservation: string;
}

type Row = [
  role: Role,
  scope: string,
  method: string,
  path: (ids: Ids) => string,
  body: ((ids: Ids) => unknown) | undefined,
  status: number,
  missing?: string,
];

const observation = (patientId: string) => ({
  resourceType: 'Observation',
  status: 'final',
  code: { text: 'Body weight' },
  subject: { reference: `Patient/${patientId}` },
  valueQuantity: { value: 70, unit: 'kg' },
});

/** A Patient the raw provisioning route accepts (it needs an email to send the access code to). */
const emailedPatient = (tag: string) => ({
  resourceType: 'Patient',
  name: [{ family: 'Scoped', given: [tag] }],
  telecom: [{ system: 'email', value: `scoped-${tag}@example.com` }],
});

const TABLE: Row[] = [
  ['patient', 'patient/Observation.rs', 'GET', () => '/fhir/Observation', undefined, 200],
  ['patient', 'patient/Observation.rs', 'GET', (i) => `/fhir/Observation/${i.myObservation}`, undefined, 200],
  [
    'patient',
    'patient/Observation.rs',
    'GET',
    () => '/fhir/Condition',
    undefined,
    403,
    'patient/Condition.s',
  ],
  [
    'patient',
    'patient/Observation.rs',
    'GET',
    (i) => `/fhir/Patient/${i.me}`,
    undefined,
    403,
    'patient/Patient.r',
  ],
  [
    'patient',
    'patient/Observation.r',
    'GET',
    () => '/fhir/Observation',
    undefined,
    403,
    'patient/Observation.s',
  ],
  [
    'patient',
    'patient/Observation.s',
    'GET',
    (i) => `/fhir/Observation/${i.myObservation}`,
    undefined,
    403,
    'patient/Observation.r',
  ],
  ['patient', 'patient/Observation.read', 'GET', () => '/fhir/Observation', undefined, 200],
  [
    'patient',
    'patient/Observation.r',
    'GET',
    (i) => `/fhir/Observation/${i.myObservation}/_history`,
    undefined,
    200,
  ],
  ['patient', 'patient/*.rs', 'GET', () => '/fhir/Condition', undefined, 200],
  ['patient', 'patient/*.rs', 'GET', (i) => `/fhir/Patient/${i.me}`, undefined, 200],
  // the compartment still applies: another patient's record is not found
  ['patient', 'patient/*.rs', 'GET', (i) => `/fhir/Observation/${i.otherObservation}`, undefined, 404],
  // the role may not write at all: its own refusal, whatever was asked
  ['patient', 'patient/*.rs', 'POST', () => '/fhir/Observation', (i) => observation(i.me), 403],
  [
    'practitioner',
    'user/Observation.rs',
    'GET',
    (i) => `/fhir/Observation?subject=Patient/${i.panelPatient}`,
    undefined,
    200,
  ],
  [
    'practitioner',
    'user/Observation.rs',
    'GET',
    (i) => `/fhir/Patient/${i.panelPatient}`,
    undefined,
    403,
    'user/Patient.r',
  ],
  [
    'practitioner',
    'user/Observation.rs',
    'POST',
    () => '/fhir/Observation',
    (i) => observation(i.panelPatient),
    403,
    'user/Observation.c',
  ],
  [
    'practitioner',
    'user/Observation.crus',
    'POST',
    () => '/fhir/Observation',
    (i) => observation(i.panelPatient),
    201,
  ],
  ['practitioner', 'user/*.rs', 'GET', (i) => `/fhir/Patient/${i.panelPatient}`, undefined, 200],
  [
    'practitioner',
    'user/*.rs',
    'PUT',
    (i) => `/fhir/Observation/${i.panelObservation}`,
    (i) => ({ ...observation(i.panelPatient), id: i.panelObservation }),
    403,
    'user/Observation.u',
  ],
  [
    'practitioner',
    'user/Observation.cru',
    'PUT',
    (i) => `/fhir/Observation/${i.panelObservation}`,
    (i) => ({ ...observation(i.panelPatient), id: i.panelObservation }),
    200,
  ],
  // the panel still applies: an Observation of a patient who is not theirs
  ['practitioner', 'user/*.crus', 'GET', (i) => `/fhir/Observation/${i.otherObservation}`, undefined, 404],
  ['admin', 'user/Patient.rs', 'GET', () => '/fhir/Patient', undefined, 200],
  ['admin', 'user/Patient.rs', 'GET', () => '/fhir/Observation', undefined, 403, 'user/Observation.s'],
  [
    'admin',
    'user/Patient.rs',
    'DELETE',
    (i) => `/fhir/Observation/${i.otherObservation}`,
    undefined,
    403,
    'user/Observation.d',
  ],
  [
    'admin',
    'user/Patient.rs',
    'POST',
    () => '/fhir',
    () => ({ resourceType: 'Bundle', type: 'batch', entry: [] }),
    403,
    'user/*.cruds',
  ],
  // a batch's entries and a POSTed operation's answer are not checked type by type: without every
  // permission on every type, an app granted no delete would delete through a transaction
  [
    'admin',
    'user/*.crs',
    'POST',
    () => '/fhir',
    (i) => ({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ request: { method: 'DELETE', url: `Observation/${i.otherObservation}` } }],
    }),
    403,
    'user/*.cruds',
  ],
  [
    'admin',
    'user/Patient.c',
    'POST',
    (i) => `/fhir/Patient/${i.me}/$everything`,
    () => ({ resourceType: 'Parameters' }),
    403,
    'user/*.cruds',
  ],
  [
    'admin',
    'user/*.cruds',
    'POST',
    () => '/fhir',
    (i) => ({
      resourceType: 'Bundle',
      type: 'batch',
      entry: [{ request: { method: 'GET', url: `Observation/${i.myObservation}` } }],
    }),
    200,
  ],
  // raw provisioning lives at /fhir too: a SMART token creates people only with the create scope
  [
    'admin',
    'user/Patient.rs',
    'POST',
    () => '/fhir/Patient',
    () => emailedPatient('rs'),
    403,
    'user/Patient.c',
  ],
  [
    'admin',
    'user/Patient.rs',
    'POST',
    () => '/fhir/Practitioner',
    () => ({ ...emailedPatient('gp'), resourceType: 'Practitioner' }),
    403,
    'user/Practitioner.c',
  ],
  ['admin', 'user/Patient.crus', 'POST', () => '/fhir/Patient', () => emailedPatient('crus'), 201],
];

describe('SMART scopes at /fhir (started gateway, embedded FHIR server)', () => {
  let gw: TestGateway;
  let app: RegisteredApp;
  const ids = {} as Ids;
  const users = new Map<Role, { email: string; password: string }>();
  const tokens = new Map<string, string>();

  beforeAll(async () => {
    gw = await startSmartGateway();
    app = await registerApp(gw, {
      scopes: ['launch/patient', 'openid', 'fhirUser', 'patient/*.rs', 'user/*.cruds'],
    });
    const fhir = gw.deps.fhir;
    const practitioner = await fhir.create('Practitioner', {
      resourceType: 'Practitioner',
      name: [{ family: 'Doe' }],
    });
    const me = await fhir.create('Patient', { resourceType: 'Patient', name: [{ family: 'Lee' }] });
    const other = await fhir.create('Patient', { resourceType: 'Patient', name: [{ family: 'Canary' }] });
    const panel = await fhir.create('Patient', {
      resourceType: 'Patient',
      name: [{ family: 'Panel' }],
      generalPractitioner: [{ reference: `Practitioner/${practitioner.id}` }],
    });
    ids.me = me.id;
    ids.panelPatient = panel.id;
    ids.myObservation = (await fhir.create('Observation', observation(me.id) as never)).id;
    ids.otherObservation = (await fhir.create('Observation', observation(other.id) as never)).id;
    ids.panelObservation = (await fhir.create('Observation', observation(panel.id) as never)).id;
    await fhir.create('Condition', {
      resourceType: 'Condition',
      subject: { reference: `Patient/${me.id}` },
      code: { text: 'Asthma' },
    } as never);
    users.set('patient', await gw.seedUser({ role: 'patient', fhirId: me.id }));
    users.set('practitioner', await gw.seedUser({ role: 'practitioner', fhirId: practitioner.id }));
    users.set('admin', await gw.seedUser({ role: 'admin', fhirId: null }));
  });
  afterAll(() => gw.close());

  async function tokenFor(role: Role, scope: string): Promise<string> {
    const key = `${role} ${scope}`;
    let token = tokens.get(key);
    if (!token) {
      const launchScope = role === 'patient' ? `launch/patient ${scope}` : scope;
      token = (await smartTokens(gw, app, users.get(role)!, launchScope)).access_token!;
      tokens.set(key, token);
    }
    return token;
  }

  it.each(TABLE)('%s with %s: %s %s -> %s', async (role, scope, method, path, body, status, missing) => {
    const response = await gw.call(path(ids), {
      method,
      token: await tokenFor(role, scope),
      ...(body ? { json: body(ids) } : {}),
      headers: body ? { 'content-type': 'application/fhir+json' } : {},
    });
    const text = await response.text();
    expect(response.status, text).toBe(status);
    if (missing) {
      const outcome = JSON.parse(text) as {
        issue: Array<{ diagnostics: string; details: { text: string } }>;
      };
      expect(outcome.issue[0]?.diagnostics).toBe('insufficient_scope');
      expect(outcome.issue[0]?.details.text).toContain(missing);
      expect(response.headers.get('www-authenticate')).toContain(`scope="${missing}"`);
    } else if (status === 403) {
      expect(JSON.parse(text).issue[0].diagnostics).toBe('forbidden');
    }
  });

  it("keeps /auth/login tokens role-wide: a patient's reads anything of their own compartment", async () => {
    const patient = users.get('patient')!;
    const token = await gw.login(patient.email, patient.password);
    expect((await gw.call('/fhir/Condition', { token })).status).toBe(200);
    expect((await gw.call(`/fhir/Patient/${ids.me}`, { token })).status).toBe(200);
  });

  it('refused provisioning stored nothing: no account, and no Patient on the FHIR server', async () => {
    const accounts = await gw.deps.db
      .selectFrom('users')
      .select('email')
      .where('email', 'like', 'scoped-%')
      .execute();
    expect(accounts.map((a) => a.email)).toEqual(['scoped-crus@example.com']);
    const found = await gw.deps.fhir.search<Patient>('Patient', new URLSearchParams({ family: 'Scoped' }));
    expect(found.body?.entry?.map((e) => e.resource?.name?.[0]?.given?.[0])).toEqual(['crus']);
  });

  /** The resource types of a search's entries, as a sorted list of distinct names. */
  async function typesFound(role: Role, scope: string, path: string): Promise<string[]> {
    const response = await gw.call(path, { token: await tokenFor(role, scope) });
    expect(response.status).toBe(200);
    const bundle = (await response.json()) as { entry?: Array<{ resource?: { resourceType: string } }> };
    return [...new Set((bundle.entry ?? []).map((e) => e.resource?.resourceType ?? ''))].sort();
  }

  it.each<[Role, string, (i: Ids) => string, string[]]>([
    // an included resource needs the read scope of its own type, not only the searched type's
    [
      'patient',
      'patient/Observation.rs',
      () => '/fhir/Observation?_include=Observation:subject',
      ['Observation'],
    ],
    [
      'patient',
      'patient/Observation.rs patient/Patient.r',
      () => '/fhir/Observation?_include=Observation:subject',
      ['Observation', 'Patient'],
    ],
    ['patient', 'patient/Patient.rs', () => '/fhir/Patient?_revinclude=Observation:subject', ['Patient']],
    [
      'patient',
      'patient/*.rs',
      () => '/fhir/Patient?_revinclude=Observation:subject',
      ['Observation', 'Patient'],
    ],
    [
      'practitioner',
      'user/Observation.rs',
      (i) => `/fhir/Observation?subject=Patient/${i.panelPatient}&_include=Observation:subject`,
      ['Observation'],
    ],
    [
      'admin',
      'user/Patient.rs',
      (i) => `/fhir/Patient?_id=${i.me}&_revinclude=Observation:subject`,
      ['Patient'],
    ],
    [
      'admin',
      'user/Patient.rs user/Observation.rs',
      (i) => `/fhir/Patient?_id=${i.me}&_revinclude=Observation:subject`,
      ['Observation', 'Patient'],
    ],
  ])('%s with %s: %s brings only the types the token reads', async (role, scope, path, types) => {
    expect(await typesFound(role, scope, path(ids))).toEqual(types);
  });

  it('refuses a SMART token outside /fhir (its audience is the FHIR base)', async () => {
    const token = await tokenFor('patient', 'patient/*.rs');
    expect((await gw.call('/auth/me', { token })).status).toBe(401);
    expect((await gw.call('/patient/observations', { token })).status).toBe(401);
  });
});
