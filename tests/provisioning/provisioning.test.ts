import fs from 'node:fs';
import path from 'node:path';
import type { Patient, Practitioner } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { patientFromDto } from '../../src/provisioning/fhirMappers.js';
import type { CreatePatientInput } from '../../src/provisioning/provisioningSchemas.js';
import { startTestGateway, type TestGateway, UPSTREAMS } from '../helpers/gateway.js';
import { DIALECTS } from '../helpers/postgres.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

const CODE_PATTERN =
  /\b[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}\b/;

const MATRIX = DIALECTS.flatMap((dialect) => UPSTREAMS.map((upstream) => [dialect, upstream] as const));

describe.each(MATRIX)('provisioning (%s, %s upstream)', (dialect, upstream) => {
  let gw: TestGateway;
  let smtp: SmtpCapture;
  let admin: string;
  let counter = 0;
  const uniqueEmail = (prefix = 'person') => `${prefix}-${dialect}-${upstream}-${++counter}@example.com`;

  beforeAll(async () => {
    smtp = await startSmtpCapture();
    gw = await startTestGateway({
      dialect,
      upstream,
      env: { SMTP_URL: smtp.url, APP_NAME: 'Acme Health', SIGNUP_URL: 'https://app.example.com/signup' },
    });
    admin = await gw.adminToken();
  });
  afterAll(async () => {
    await gw.close();
    await smtp.close();
  });

  const post = (
    path: string,
    json: unknown,
    token: string | null = admin,
    headers: Record<string, string> = {},
  ) => gw.call(path, { method: 'POST', json, ...(token ? { token } : {}), headers });

  /** A raw FHIR create (`POST /fhir/Patient`, `/fhir/Practitioner`) by the admin. */
  const postRaw = <T extends { resourceType: string }>(resource: T) =>
    gw.call(`/fhir/${resource.resourceType}`, {
      method: 'POST',
      token: admin,
      body: JSON.stringify(resource),
      headers: { 'content-type': 'application/fhir+json' },
    });

  const userByEmail = (email: string) =>
    gw.deps.db.selectFrom('users').selectAll().where('email', '=', email.toLowerCase()).executeTakeFirst();

  const fhirSearch = async (type: string, query: string) => {
    const response = await gw.deps.fhir.search(type, new URLSearchParams(query));
    return response.body?.entry?.map((e) => e.resource) ?? [];
  };

  /** This gateway's account identifier system: its PUBLIC_BASE_URL, which is unique per gateway on real HAPI. */
  const accountSystem = () => `${gw.deps.config.publicBaseUrl}/identifiers/account-email`;

  /**
   * The Patients on the FHIR server this gateway could have created: all of them on a server of its
   * own; on the real HAPI server, which the whole run shares while other files write to it, those
   * carrying this gateway's account identifier (every provisioned resource does).
   */
  const patientCount = async () => {
    const own = upstream === 'hapi-real' ? `identifier=${encodeURIComponent(`${accountSystem()}|`)}&` : '';
    const { body } = await gw.deps.fhir.search('Patient', new URLSearchParams(`${own}_summary=count`));
    if (typeof body?.total !== 'number') throw new Error('the FHIR server did not count the Patients');
    return body.total;
  };

  const countRows = async (table: 'users' | 'outbox' | 'audit_log' | 'provisioning_intents') =>
    Number(
      (
        await gw.deps.db
          .selectFrom(table)
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );

  const mailsTo = (email: string) =>
    smtp.messages.filter((m) => m.to && JSON.stringify(m.to).includes(email));

  async function waitForMailTo(email: string) {
    for (let i = 0; i < 50; i++) {
      const found = mailsTo(email);
      if (found.length) return found;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no mail to ${email}`);
  }

  it('creates the Patient on the FHIR server, an inactive user linked to it, and emails the access code', async () => {
    const email = uniqueEmail('ann');
    const response = await post('/fhir/patient', {
      name: { given: ['Ann'], family: 'Lee' },
      email: email.toUpperCase(),
      dob: '1980-04-12',
      gender: 'female',
      phone: '+1 555 0100',
      address: { line: '1 Main St', city: 'Springfield', postal_code: '12345', country: 'US' },
      identifier: { system: 'urn:oid:1.2.3', value: 'MRN-42' },
    });
    expect(response.status).toBe(201);
    const body = (await response.json()) as { fhir_id: string; user_id: string; message: string };
    expect(body).toEqual({
      fhir_id: expect.any(String),
      user_id: expect.any(String),
      message: expect.stringContaining(email),
    });

    const user = await userByEmail(email);
    expect(user).toMatchObject({
      id: body.user_id,
      role: 'patient',
      fhir_resource_id: body.fhir_id,
      is_registered: 0,
      created_by_admin: 1,
      password_hash: null,
      access_code_attempts: 0,
    });
    expect(user?.access_code_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(Date.parse(user!.access_code_expires_at!) - Date.now()).toBeGreaterThan(23.9 * 3600_000);

    const patient = (await gw.deps.fhir.read<Patient>('Patient', body.fhir_id)).body!;
    expect(patient.telecom).toEqual(
      expect.arrayContaining([
        { system: 'email', value: email },
        { system: 'phone', value: '+1 555 0100' },
      ]),
    );
    expect(patient).toMatchObject({
      birthDate: '1980-04-12',
      gender: 'female',
      name: [{ family: 'Lee', given: ['Ann'] }],
    });
    expect(patient.address?.[0]).toMatchObject({
      line: ['1 Main St'],
      city: 'Springfield',
      postalCode: '12345',
    });
    expect(patient.identifier).toEqual(
      expect.arrayContaining([{ system: 'urn:oid:1.2.3', value: 'MRN-42' }]),
    );

    const [mail] = await waitForMailTo(email);
    expect(mail!.subject).toBe('Your Access Code to Register on Acme Health');
    expect(mail!.text).toMatch(CODE_PATTERN);
    expect(mail!.text).toContain('Ann Lee');
    expect(mail!.text).toMatch(/expires on \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC \(in 24 hours\)/);
    expect(mail!.text).toContain(`https://app.example.com/signup?email=${encodeURIComponent(email)}`);
    expect(mail!.text).toMatch(/not expecting this email/i);
    expect(mail!.html).toContain(CODE_PATTERN.exec(mail!.text!)![0]);

    // the new patient's trail begins with their provisioning
    const trail = await gw.call(`/admin/audit?patient=${body.fhir_id}`, { token: admin });
    expect(((await trail.json()) as { entries: unknown[] }).entries).toEqual([
      expect.objectContaining({
        action: 'provisioning.create',
        outcome: 'success',
        target: expect.objectContaining({ fhir_type: 'Patient', fhir_id: body.fhir_id }),
        patient_id: body.fhir_id,
      }),
    ]);
  });

  it('creates a Practitioner the same way, with practitioner wording', async () => {
    const email = uniqueEmail('dr');
    const response = await post('/fhir/practitioner', {
      name: 'Grace Hopper',
      email,
      phone: '+1 555 0199',
      identifier: { system: 'http://hl7.org/fhir/sid/us-npi', value: '1234567893' },
      qualification: {
        code: 'MD',
        display: 'Doctor of Medicine',
        system: 'http://terminology.hl7.org/CodeSystem/v2-0360',
      },
    });
    expect(response.status).toBe(201);
    const body = (await response.json()) as { fhir_id: string; user_id: string };
    expect(await userByEmail(email)).toMatchObject({
      role: 'practitioner',
      fhir_resource_id: body.fhir_id,
      is_registered: 0,
    });
    const practitioner = (await gw.deps.fhir.read<Practitioner>('Practitioner', body.fhir_id)).body!;
    expect(practitioner.telecom).toEqual(expect.arrayContaining([{ system: 'email', value: email }]));
    expect(practitioner.qualification?.[0]?.code?.coding?.[0]?.code).toBe('MD');
    const [mail] = await waitForMailTo(email);
    expect(mail!.subject).toBe('Your Access Code to Register on Acme Health');
    expect(mail!.text).toMatch(/your patients/i);
  });

  it('tells the admin when several FHIR resources already carry the account identifier (upstream 412)', async () => {
    const email = uniqueEmail('duplicated');
    const system = accountSystem();
    for (let i = 0; i < 2; i++) {
      await gw.deps.fhir.create('Patient', {
        resourceType: 'Patient',
        name: [{ family: 'Twin' }],
        identifier: [{ system, value: email }],
      });
    }
    const response = await post('/fhir/patient', { name: 'Twin Case', email, dob: '1990-01-01' });
    expect(response.status).toBe(409);
    expect(await response.json()).toMatchObject({ code: 'duplicate_identifier' });
    expect(await userByEmail(email)).toBeUndefined();
    expect(await fhirSearch('Patient', `identifier=${system}|${email}`)).toHaveLength(2);
  });

  // the conditional create finds an earlier attempt's record: linked as it is only when this create says the same
  it('links the record an earlier attempt made when the retry says the same, and refuses one that says otherwise', async () => {
    const email = uniqueEmail('earlier');
    const mrn = (value: string) => [{ system: 'urn:example:mrn', value }];
    const body = {
      name: 'Earlier Attempt',
      email,
      dob: '1990-01-01',
      gender: 'female',
      identifier: mrn('WRONG-1'),
    };
    const sent = patientFromDto(body as CreatePatientInput, email);
    const earlier = await gw.deps.fhir.create('Patient', {
      ...sent,
      identifier: [...(sent.identifier ?? []), { system: accountSystem(), value: email }],
    });
    const corrected = await post('/fhir/patient', { ...body, dob: '1990-01-02', gender: 'other' });
    expect(corrected.status).toBe(409);
    const refusal = (await corrected.json()) as { detail: string };
    expect(refusal.detail).toContain(`Patient/${earlier.id}`);
    expect(refusal.detail).toContain('dob, gender');
    // the admin's own identifiers are compared too (the account's is the server's match)
    const otherMrn = await post('/fhir/patient', { ...body, identifier: mrn('RIGHT-2') });
    expect(otherMrn.status).toBe(409);
    expect(((await otherMrn.json()) as { detail: string }).detail).toContain('identifier');
    expect(await userByEmail(email)).toBeUndefined();
    const same = await post('/fhir/patient', body);
    expect(same.status).toBe(201);
    expect(((await same.json()) as { fhir_id: string }).fhir_id).toBe(earlier.id);
    expect((await userByEmail(email))?.fhir_resource_id).toBe(earlier.id);
  });

  it('assigns a patient to an existing practitioner and refuses an unknown one', async () => {
    const dr = (await (
      await post('/fhir/practitioner', { name: 'Dr Who', email: uniqueEmail('who') })
    ).json()) as {
      fhir_id: string;
    };
    const ok = await post('/fhir/patient', {
      name: 'Rose Tyler',
      email: uniqueEmail('rose'),
      dob: '1987-04-01',
      general_practitioner_id: dr.fhir_id,
    });
    expect(ok.status).toBe(201);
    const { fhir_id } = (await ok.json()) as { fhir_id: string };
    const patient = (await gw.deps.fhir.read<Patient>('Patient', fhir_id)).body!;
    expect(patient.generalPractitioner).toEqual([{ reference: `Practitioner/${dr.fhir_id}` }]);

    const email = uniqueEmail('nobody-assigned');
    const bad = await post('/fhir/patient', {
      name: 'X Y',
      email,
      dob: '1990-01-01',
      general_practitioner_id: 'does-not-exist',
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({
      code: 'validation_failed',
      errors: [{ path: 'general_practitioner_id' }],
    });
    expect(await userByEmail(email)).toBeUndefined();
  });

  it('runs the same flow for a raw FHIR POST /fhir/Patient and answers like a FHIR server', async () => {
    const email = uniqueEmail('raw');
    const resource: Patient = {
      resourceType: 'Patient',
      name: [{ family: 'Raw', given: ['Rita'] }],
      birthDate: '1970-01-01',
      telecom: [{ system: 'email', value: email }],
    };
    const response = await postRaw(resource);
    expect(response.status).toBe(201);
    expect(response.headers.get('content-type')).toContain('application/fhir+json');
    const created = (await response.json()) as Patient;
    expect(created).toMatchObject({
      resourceType: 'Patient',
      id: expect.any(String),
      birthDate: '1970-01-01',
    });
    expect(response.headers.get('location')).toBe(
      `${gw.deps.config.publicBaseUrl}/fhir/Patient/${created.id}/_history/${created.meta?.versionId}`,
    );
    expect(await userByEmail(email)).toMatchObject({
      role: 'patient',
      fhir_resource_id: created.id,
      is_registered: 0,
    });
    const [mail] = await waitForMailTo(email);
    expect(mail!.text).toMatch(CODE_PATTERN);
  });

  it.each(['.', '..'])(
    'refuses a general practitioner id of dots alone (%s) with a 400, slim or raw, and creates nothing (review F: a 500)',
    async (id) => {
      const email = uniqueEmail('dots-gp');
      const slim = await post('/fhir/patient', {
        name: 'X Y',
        email,
        dob: '1990-01-01',
        general_practitioner_id: id,
      });
      expect(slim.status).toBe(400);
      expect(await slim.json()).toMatchObject({ errors: [{ path: 'general_practitioner_id' }] });
      const raw = await postRaw({
        resourceType: 'Patient',
        name: [{ family: 'Dots' }],
        telecom: [{ system: 'email', value: email }],
        generalPractitioner: [{ reference: `Practitioner/${id}` }],
      });
      expect(raw.status).toBe(400);
      expect(await userByEmail(email)).toBeUndefined();
    },
  );

  it.each(['2026-02-30', '2999-01-01', '2999', '1980-13'])(
    'refuses a raw create whose birthDate %s is no real past date, as the slim dob is, and creates nothing (review F)',
    async (birthDate) => {
      const email = uniqueEmail('raw-dob');
      const response = await postRaw({
        resourceType: 'Patient',
        name: [{ family: 'Rawdob' }],
        birthDate,
        telecom: [{ system: 'email', value: email }],
      });
      expect(response.status).toBe(400);
      const outcome = (await response.json()) as { issue: { expression?: string[] }[] };
      expect(outcome.issue[0]?.expression).toEqual(['Patient.birthDate']);
      expect(await userByEmail(email)).toBeUndefined();
      expect(await fhirSearch('Patient', 'family=Rawdob')).toHaveLength(0);
    },
  );

  it("names the raw create's own element when its generalPractitioner is no Practitioner", async () => {
    const email = uniqueEmail('raw-gp');
    const response = await postRaw({
      resourceType: 'Patient',
      name: [{ family: 'Rawgp' }],
      telecom: [{ system: 'email', value: email }],
      generalPractitioner: [{ reference: 'Organization/x' }],
    });
    expect(response.status).toBe(400);
    const outcome = (await response.json()) as { issue: { expression?: string[] }[] };
    expect(outcome.issue[0]?.expression).toEqual(['generalPractitioner']);
    expect(await userByEmail(email)).toBeUndefined();
  });

  it('answers a raw FHIR create without an email telecom with a 400 OperationOutcome and creates nothing', async () => {
    const before = await fhirSearch('Practitioner', 'family=Nomail');
    const response = await postRaw({ resourceType: 'Practitioner', name: [{ family: 'Nomail' }] });
    expect(response.status).toBe(400);
    const outcome = (await response.json()) as { resourceType: string; issue: { expression?: string[] }[] };
    expect(outcome.resourceType).toBe('OperationOutcome');
    expect(outcome.issue[0]?.expression).toEqual(['telecom']);
    expect(await fhirSearch('Practitioner', 'family=Nomail')).toHaveLength(before.length);
  });

  it.each([
    ['no email', { name: 'No Mail', dob: '1990-01-01' }],
    ['an invalid email', { name: 'Bad Mail', dob: '1990-01-01', email: 'not-an-address' }],
    [
      'CRLF in the email',
      { name: 'Crlf', dob: '1990-01-01', email: 'crlf@example.com\r\nBcc: evil@example.com' },
    ],
    ['a second address', { name: 'Two', dob: '1990-01-01', email: 'one@example.com, two@example.com' }],
    ['a display name', { name: 'Disp', dob: '1990-01-01', email: 'Eve <eve@example.com>' }],
    ['a bad date', { name: 'Date', dob: '1990-02-30', email: 'date@example.com' }],
    ['a future birth date', { name: 'Future', dob: '2999-01-01', email: 'future@example.com' }],
    ['an unknown field', { name: 'Mass', dob: '1990-01-01', email: 'mass@example.com', role: 'admin' }],
    ['a name that renders reversed', { name: '\u202eeeL nnA', dob: '1990-01-01', email: 'bidi@example.com' }],
    ['a name of a zero-width space', { name: '\u200b', dob: '1990-01-01', email: 'zw@example.com' }],
    ['a name with a lone surrogate', { name: 'Ann \ud800', dob: '1990-01-01', email: 'sur@example.com' }],
    ['a name with a line separator', { name: 'Ann\u2028Lee', dob: '1990-01-01', email: 'ls@example.com' }],
    ['a name that was not UTF-8', { name: 'Ren\ufffd', dob: '1990-01-01', email: 'latin@example.com' }],
    ['a phone without digits', { name: 'Phone', dob: '1990-01-01', email: 'ph@example.com', phone: '---' }],
  ])('refuses %s with 400; nothing upstream, nothing stored, nothing mailed', async (_label, body) => {
    const [users, outbox, patients, mails] = [
      await countRows('users'),
      await countRows('outbox'),
      await patientCount(),
      smtp.messages.length,
    ];
    const response = await post('/fhir/patient', body);
    expect(response.status).toBe(400);
    const problem = (await response.json()) as { code: string; errors: { path: string }[] };
    expect(problem.code).toBe('validation_failed');
    expect(problem.errors.length).toBeGreaterThan(0);
    expect(await countRows('users')).toBe(users);
    expect(await patientCount()).toBe(patients);
    const outboxMails = await gw.deps.db
      .selectFrom('outbox')
      .select('id')
      .where('kind', '=', 'email')
      .execute();
    expect(outboxMails.length).toBeLessThanOrEqual(outbox);
    await new Promise((r) => setTimeout(r, 100));
    expect(smtp.messages.length).toBe(mails);
  });

  it.each([
    ['a year 0000', { dob: '0000-01-01' }, ['dob']],
    ['an empty address', { address: {} }, ['address']],
    [
      'unknown fields inside the address',
      { address: { city: 'X', zip: '1', street: 'Y' } },
      ['address.zip', 'address.street'],
    ],
    ['a control character in the name', { name: 'Ann\u0001 Lee' }, ['name']],
  ])('names the request field at fault for %s', async (_label, change, paths) => {
    const response = await post('/fhir/patient', {
      name: 'Path Case',
      dob: '1990-01-01',
      email: 'path@example.com',
      ...change,
    });
    expect(response.status).toBe(400);
    const problem = (await response.json()) as { errors: { path: string }[] };
    expect(problem.errors.map((e) => e.path)).toEqual(paths);
  });

  it('says what a name needs when the family name is missing, and names an empty field once', async () => {
    const body = { dob: '1990-01-01', email: 'msg@example.com' };
    const noFamily = await post('/fhir/patient', { ...body, name: { given: 'Ann' } });
    expect(((await noFamily.json()) as { errors: unknown[] }).errors).toEqual([
      { path: 'name', message: 'must be one line of text, or {given, family} with a family name' },
    ]);
    const empty = await post('/fhir/patient', { ...body, name: { family: ' ' } });
    expect(((await empty.json()) as { errors: unknown[] }).errors).toEqual([
      { path: 'name.family', message: 'must not be empty' },
    ]);
  });

  it.each([
    ['a domain label ending in a hyphen', 'ann@example-.com'],
    ['a domain label over 63 characters', `ann@${'x'.repeat(64)}.com`],
    ['a non-ASCII local part', 'josé@example.com'],
  ])(
    'refuses an address the mailer cannot send to (%s) with 400 on the email, before any FHIR write',
    async (_label, email) => {
      const [intents, patients] = [await countRows('provisioning_intents'), await patientCount()];
      const slim = await post('/fhir/patient', { name: 'Ann Smith', email, dob: '1980-01-01' });
      expect(slim.status).toBe(400);
      expect(await slim.json()).toMatchObject({
        code: 'validation_failed',
        errors: [{ path: 'email', message: 'must be a single email address' }],
      });
      const raw = await postRaw({
        resourceType: 'Patient',
        name: [{ family: 'Smith' }],
        telecom: [{ system: 'email', value: email }],
      });
      expect(raw.status).toBe(400);
      const outcome = (await raw.json()) as { resourceType: string; issue: { expression?: string[] }[] };
      expect(outcome.resourceType).toBe('OperationOutcome');
      expect(outcome.issue[0]?.expression).toEqual(['telecom']);
      expect(await countRows('provisioning_intents')).toBe(intents);
      expect(await patientCount()).toBe(patients);
    },
  );

  it('answers the raw FHIR create as Prefer asks, and refuses If-None-Exist with 400 without creating anything', async () => {
    const raw = (email: string, headers: Record<string, string>) =>
      gw.call('/fhir/Patient', {
        method: 'POST',
        token: admin,
        body: JSON.stringify({
          resourceType: 'Patient',
          name: [{ family: 'Preferred' }],
          telecom: [{ system: 'email', value: email }],
        }),
        headers: { 'content-type': 'application/fhir+json', ...headers },
      });
    const patients = await patientCount();
    const conditional = await raw(uniqueEmail('cond'), { 'if-none-exist': 'name=Preferred' });
    expect(conditional.status).toBe(400);
    expect(await patientCount()).toBe(patients);
    const minimal = await raw(uniqueEmail('minimal'), { prefer: 'return=minimal' });
    expect(minimal.status).toBe(201);
    expect(minimal.headers.get('location')).toMatch(/\/fhir\/Patient\/[^/]+\/_history\//);
    expect(await minimal.text()).toBe('');
    expect(minimal.headers.get('content-type')).toBeNull();
    const outcome = await raw(uniqueEmail('outcome'), { prefer: 'return=OperationOutcome' });
    expect(outcome.status).toBe(201);
    expect(((await outcome.json()) as { resourceType: string }).resourceType).toBe('OperationOutcome');
  });

  it('refuses a duplicate email in any letter case with 409, without touching FHIR or mailing', async () => {
    const email = uniqueEmail('dup');
    expect((await post('/fhir/patient', { name: 'First One', email, dob: '1990-01-01' })).status).toBe(201);
    await waitForMailTo(email);
    const original = await userByEmail(email);
    const patientsBefore = await patientCount();
    const mailsBefore = smtp.messages.length;
    const response = await post('/fhir/practitioner', { name: 'Second One', email: email.toUpperCase() });
    expect(response.status).toBe(409);
    expect(await response.json()).toMatchObject({ code: 'conflict' });
    expect(await userByEmail(email)).toEqual(original);
    expect(await patientCount()).toBe(patientsBefore);
    expect(await fhirSearch('Practitioner', 'family=One')).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 200));
    expect(smtp.messages.length).toBe(mailsBefore);
  });

  it('refuses patients, practitioners and anonymous callers with no side effect, and audits the denied attempt', async () => {
    const patient = await gw.seedUser({ role: 'patient' });
    const practitioner = await gw.seedUser({ role: 'practitioner' });
    const tokens = {
      patient: await gw.login(patient.email, patient.password),
      practitioner: await gw.login(practitioner.email, practitioner.password),
    };
    const usersBefore = await countRows('users');
    const email = uniqueEmail('denied');
    for (const [caller, token, status] of [
      ['patient', tokens.patient, 403],
      ['practitioner', tokens.practitioner, 403],
      ['anonymous', null, 401],
    ] as const) {
      const before = await gw.deps.db
        .selectFrom('audit_log')
        .select('id')
        .where('action', '=', 'access.denied')
        .execute();
      const response = await post('/fhir/patient', { name: 'Den Ied', email, dob: '1990-01-01' }, token);
      expect(response.status, caller).toBe(status);
      const after = await gw.deps.db
        .selectFrom('audit_log')
        .selectAll()
        .where('action', '=', 'access.denied')
        .orderBy('id', 'desc')
        .execute();
      expect(after.length, caller).toBe(before.length + 1);
      expect(after[0]).toMatchObject({
        outcome: 'denied',
        actor_role: caller === 'anonymous' ? null : caller,
      });
    }
    expect(await countRows('users')).toBe(usersBefore);
    expect(await userByEmail(email)).toBeUndefined();
  });

  it('replays the first answer for a repeated Idempotency-Key and refuses the key with another body', async () => {
    const email = uniqueEmail('idem');
    const body = { name: 'Idem Potent', email, dob: '1990-01-01' };
    const first = await post('/fhir/patient', body, admin, { 'idempotency-key': `key-${email}` });
    expect(first.status).toBe(201);
    const firstBody = await first.json();
    const usersAfterFirst = await countRows('users');
    const replay = await post('/fhir/patient', body, admin, { 'idempotency-key': `key-${email}` });
    expect(replay.status).toBe(201);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await replay.json()).toEqual(firstBody);
    expect(await countRows('users')).toBe(usersAfterFirst);
    expect(await fhirSearch('Patient', `email=${encodeURIComponent(email)}`)).toHaveLength(1);
    const different = await post('/fhir/patient', { ...body, dob: '1991-01-01' }, admin, {
      'idempotency-key': `key-${email}`,
    });
    expect(different.status).toBe(422);
    expect(await different.json()).toMatchObject({ code: 'idempotency_key_reused' });
    await waitForMailTo(email);
    await new Promise((r) => setTimeout(r, 200));
    expect(mailsTo(email)).toHaveLength(1);
  });

  it('never stores an access code in plaintext (database rows and files)', async () => {
    const email = uniqueEmail('scan');
    expect((await post('/fhir/patient', { name: 'Scan Me', email, dob: '1990-01-01' })).status).toBe(201);
    const [mail] = await waitForMailTo(email);
    const code = CODE_PATTERN.exec(mail!.text!)![0];
    const compact = code.replaceAll('-', '');
    const dump = JSON.stringify([
      await gw.deps.db.selectFrom('users').selectAll().execute(),
      await gw.deps.db.selectFrom('outbox').selectAll().execute(),
      await gw.deps.db.selectFrom('audit_log').selectAll().execute(),
    ]);
    expect(dump).not.toContain(code);
    expect(dump).not.toContain(compact);
    if (dialect === 'sqlite') {
      for (const file of fs.readdirSync(gw.dataDir).filter((f) => f.includes('.sqlite'))) {
        const bytes = fs.readFileSync(path.join(gw.dataDir, file)).toString('latin1');
        expect(bytes.includes(code) || bytes.includes(compact), file).toBe(false);
      }
    }
  });

  it('re-issues a code: the old one is void, a new mail goes out, and it is audited', async () => {
    const email = uniqueEmail('reissue');
    const created = (await (
      await post('/fhir/patient', { name: 'Re Issue', email, dob: '1990-01-01' })
    ).json()) as {
      user_id: string;
    };
    await waitForMailTo(email);
    const before = await userByEmail(email);
    const response = await post(`/admin/users/${created.user_id}/access-code`, undefined);
    expect(response.status).toBe(202);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ message: expect.any(String), expires_at: expect.any(String) });
    expect(body).not.toHaveProperty('access_code');
    const after = await userByEmail(email);
    expect(after?.access_code_hash).not.toBe(before?.access_code_hash);
    for (let i = 0; i < 50 && mailsTo(email).length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    const mails = mailsTo(email);
    expect(mails).toHaveLength(2);
    expect(CODE_PATTERN.exec(mails[1]!.text!)![0]).not.toBe(CODE_PATTERN.exec(mails[0]!.text!)![0]);
    const audit = await gw.deps.db
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'users.reissue_access_code')
      .where('target_user_id', '=', created.user_id)
      .execute();
    expect(audit).toHaveLength(1);
    expect((await post('/admin/users/no-such-user/access-code', undefined)).status).toBe(404);
  });

  it('refuses what a route does not take: unknown fields and parameters 400, a body that is not JSON 415', async () => {
    const email = uniqueEmail('nobody');
    const created = (await (
      await post('/fhir/patient', { name: 'No Body', email, dob: '1990-01-01' })
    ).json()) as {
      user_id: string;
    };
    await waitForMailTo(email);
    const before = await userByEmail(email);
    const path = `/admin/users/${created.user_id}/access-code`;
    expect((await post(path, { x: 1 })).status).toBe(400);
    expect((await post(path, [])).status).toBe(400);
    const text = (path: string) =>
      gw.call(path, {
        method: 'POST',
        token: admin,
        body: 'hello',
        headers: { 'content-type': 'text/plain' },
      });
    expect((await text(path)).status).toBe(415);
    expect((await text('/auth/logout')).status).toBe(415);
    expect((await userByEmail(email))?.access_code_hash).toBe(before?.access_code_hash);
    // what clients send for no body: a JSON Content-Type with nothing, or {}
    const empty = await gw.call(path, {
      method: 'POST',
      token: admin,
      headers: { 'content-type': 'application/json' },
    });
    expect(empty.status).toBe(202);
    expect((await post(path, {})).status).toBe(202);
    for (const list of ['/admin/provisioning/orphans?x=1', '/admin/smart-apps?x=1'])
      expect((await gw.call(list, { token: admin })).status, list).toBe(400);
  });

  it('lists the audit trail newest first with filters and a cursor', async () => {
    const first = await gw.call('/admin/audit?action=provisioning.create&outcome=success&limit=2', {
      token: admin,
    });
    expect(first.status).toBe(200);
    const page1 = (await first.json()) as { entries: { id: string; action: string }[]; next_cursor: string };
    expect(page1.entries).toHaveLength(2);
    expect(page1.entries.every((e) => e.action === 'provisioning.create')).toBe(true);
    expect(page1.entries[0]!.id > page1.entries[1]!.id).toBe(true);
    const second = await gw.call(
      `/admin/audit?action=provisioning.create&outcome=success&limit=2&cursor=${page1.next_cursor}`,
      {
        token: admin,
      },
    );
    const page2 = (await second.json()) as { entries: { id: string }[] };
    expect(page2.entries[0]!.id < page1.entries[1]!.id).toBe(true);
    const dump = JSON.stringify(page1);
    expect(dump).not.toMatch(CODE_PATTERN);
    expect((await gw.call('/admin/audit?cursor=garbage', { token: admin })).status).toBe(400);
    expect((await gw.call('/admin/audit?foo=bar', { token: admin })).status).toBe(400);
  });

  it('mirrors audit entries to the FHIR server as AuditEvent resources', async () => {
    // the real HAPI server holds every gateway's events: there, look at those about what this one provisioned
    const provisioned = await gw.deps.db
      .selectFrom('audit_log')
      .select(['target_fhir_type', 'target_fhir_id'])
      .where('action', '=', 'provisioning.create')
      .where('outcome', '=', 'success')
      .execute();
    const about = provisioned.map((row) => `${row.target_fhir_type}/${row.target_fhir_id}`);
    // the mirror names its targets by logical reference (Reference.identifier, shown in display):
    // on the shared server, take the newest events and keep those about what this gateway created
    const query = upstream === 'hapi-real' ? '_sort=-_lastUpdated&_count=500' : '_count=1000';
    const ours = (found: unknown[]) =>
      upstream === 'hapi-real'
        ? found.filter((event) => about.some((ref) => JSON.stringify(event).includes(`"display":"${ref}"`)))
        : found;
    let events: unknown[] = [];
    for (let i = 0; i < 50 && events.length === 0; i++) {
      gw.deps.outbox.wake();
      await new Promise((r) => setTimeout(r, 100));
      events = ours(await fhirSearch('AuditEvent', query));
    }
    expect(events.length).toBeGreaterThan(0);
    const serialized = JSON.stringify(events);
    expect(serialized).toContain('provisioning.create');
    expect(serialized).not.toMatch(CODE_PATTERN);
  });
});
