import { validateResource } from '@medplum/core';
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRow } from '../../db/schema.js';
import { loadFhirDefinitions } from '../../src/fhir/definitions.js';
import { DIALECTS } from '../helpers/postgres.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';
import {
  type Account,
  type AuditedGateway,
  createAccount,
  requestIdOf,
  signUp,
  startAuditedGateway,
} from './auditedGateway.js';

/**
 * Reads of patient data — through /fhir and the slim endpoints — are access events (IHE BALP):
 * who, which patient (one entry per patient), which type, read or search. An admin answers
 * "who looked at this patient's record" with GET /admin/audit?patient=, and exports the trail
 * as FHIR AuditEvents with ?format=fhir.
 */

const PASSWORD = 'a long and plain passphrase';

interface Entry {
  action: string;
  outcome: string;
  error_code: string | null;
  patient_id: string | null;
  actor: { user_id: string | null; role: string | null };
  target: { fhir_type: string | null; fhir_id: string | null };
  detail: Record<string, unknown> | null;
}

describe.each(DIALECTS)('access events (%s)', (dialect) => {
  let smtp: SmtpCapture;
  let gw: AuditedGateway;
  let admin: string;
  let doctor: Account;
  let alice: Account;
  let ann: Account;
  let bob: Account;
  let tokenAlice: string;
  let tokenDoc: string;
  const observations: Record<string, string[]> = {};

  const observation = (patientId: string) => ({
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
    subject: { reference: `Patient/${patientId}` },
    effectiveDateTime: '2026-01-01T10:00:00Z',
    valueQuantity: { value: 61, unit: 'beats/minute', system: 'http://unitsofmeasure.org', code: '/min' },
  });

  beforeAll(async () => {
    await loadFhirDefinitions();
    smtp = await startSmtpCapture();
    gw = await startAuditedGateway({ dialect, env: { SMTP_URL: smtp.url } });
    admin = await gw.adminToken();
    doctor = await createAccount(gw, smtp, 'practitioner', {
      name: 'Dr Access',
      email: `dr-${dialect}@example.com`,
    });
    const assigned = { dob: '1980-01-01', general_practitioner_id: doctor.fhirId };
    alice = await createAccount(gw, smtp, 'patient', {
      name: 'Alice Access',
      email: `alice-${dialect}@example.com`,
      ...assigned,
    });
    ann = await createAccount(gw, smtp, 'patient', {
      name: 'Ann Access',
      email: `ann-${dialect}@example.com`,
      ...assigned,
    });
    bob = await createAccount(gw, smtp, 'patient', {
      name: 'Bob Access',
      email: `bob-${dialect}@example.com`,
      dob: '1981-01-01',
    });
    tokenAlice = await signUp(gw, alice, PASSWORD);
    tokenDoc = await signUp(gw, doctor, PASSWORD);
    for (const [who, count] of [
      [alice, 2],
      [ann, 1],
      [bob, 1],
    ] as const) {
      observations[who.fhirId] = [];
      for (let i = 0; i < count; i++) {
        const response = await gw.call('/fhir/Observation', {
          method: 'POST',
          token: admin,
          headers: { 'content-type': 'application/fhir+json' },
          body: JSON.stringify(observation(who.fhirId)),
        });
        observations[who.fhirId]!.push(((await response.json()) as { id: string }).id);
      }
    }
  });

  afterAll(async () => {
    await gw?.close();
    await smtp?.close();
  });

  /** A successful read; returns the access events of that request. */
  async function read(path: string, token: string): Promise<AuditRow[]> {
    const response = await gw.call(path, { token });
    expect(response.status, path).toBe(200);
    return gw.auditOf(requestIdOf(response));
  }

  const patientsOf = (rows: AuditRow[]) => rows.map((r) => r.patient_id).sort();
  const detailOf = (row: AuditRow) => JSON.parse(row.detail ?? '{}') as Record<string, unknown>;

  it('records the patient of a write too, so the trail of one patient lists who changed their data', async () => {
    const created = await gw.call('/fhir/Observation', {
      method: 'POST',
      token: admin,
      headers: { 'content-type': 'application/fhir+json' },
      body: JSON.stringify(observation(bob.fhirId)),
    });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    const deleted = await gw.call(`/fhir/Observation/${id}`, { method: 'DELETE', token: admin });
    expect(deleted.status).toBeLessThan(300);
    expect(await gw.auditOf(requestIdOf(created))).toEqual([
      expect.objectContaining({
        action: 'fhir.create',
        outcome: 'success',
        target_fhir_id: id,
        patient_id: bob.fhirId,
      }),
    ]);
    // a delete answers no resource: it names no patient rather than a guessed one
    expect(await gw.auditOf(requestIdOf(deleted))).toEqual([
      expect.objectContaining({ action: 'fhir.delete', outcome: 'success', patient_id: null }),
    ]);
  });

  it("records a patient's reads and searches, through /fhir and the slim endpoints, with their own id", async () => {
    const [own] = await read(`/fhir/Patient/${alice.fhirId}`, tokenAlice);
    expect(own).toMatchObject({
      action: 'fhir.read',
      outcome: 'success',
      actor_user_id: alice.userId,
      actor_role: 'patient',
      target_fhir_type: 'Patient',
      target_fhir_id: alice.fhirId,
      patient_id: alice.fhirId,
      error_code: null,
    });
    const search = await read('/fhir/Observation?code=8867-4', tokenAlice);
    expect(search).toHaveLength(1);
    expect(search[0]).toMatchObject({
      action: 'fhir.search',
      target_fhir_type: 'Observation',
      patient_id: alice.fhirId,
    });
    expect(detailOf(search[0]!)).toEqual({});
    const slim = await read('/patient/observations', tokenAlice);
    expect(slim).toHaveLength(1);
    expect(slim[0]).toMatchObject({ action: 'fhir.search', patient_id: alice.fhirId });
    expect(detailOf(slim[0]!)).toEqual({ route: 'patient.observations' });
    const profile = await read('/patient/profile', tokenAlice);
    expect(profile).toEqual([expect.objectContaining({ action: 'fhir.read', patient_id: alice.fhirId })]);
  });

  it("records a patient's conditional read answered 304 like a read", async () => {
    const first = await gw.call(`/fhir/Patient/${alice.fhirId}`, { token: tokenAlice });
    const etag = first.headers.get('etag');
    expect(etag).toBeTruthy();
    const again = await gw.call(`/fhir/Patient/${alice.fhirId}`, {
      token: tokenAlice,
      headers: { 'if-none-match': etag! },
    });
    expect(again.status).toBe(304);
    const rows = await gw.auditOf(requestIdOf(again));
    expect(rows).toEqual([expect.objectContaining({ action: 'fhir.read', patient_id: alice.fhirId })]);
  });

  it('records no access event for a directory read (not patient data)', async () => {
    expect(await read('/fhir/Practitioner', tokenAlice)).toEqual([]);
  });

  it("records a practitioner's searches once per patient of the results, never another's", async () => {
    const search = await read('/fhir/Observation', tokenDoc);
    expect(patientsOf(search)).toEqual([alice.fhirId, ann.fhirId].sort());
    expect(search.every((r) => r.actor_user_id === doctor.userId && r.actor_role === 'practitioner')).toBe(
      true,
    );
    expect(new Set(search.map((r) => r.request_id)).size).toBe(1);

    const panel = await read('/practitioner/patients', tokenDoc);
    expect(patientsOf(panel)).toEqual([alice.fhirId, ann.fhirId].sort());
    expect(panel.every((r) => detailOf(r).route === 'practitioner.patients')).toBe(true);

    // the panel is asked (cached), not the Patient read: nothing of the Patient itself is shown
    const one = await read(`/practitioner/patients/${alice.fhirId}/observations`, tokenDoc);
    expect(one.map((r) => [r.action, r.patient_id])).toEqual([['fhir.search', alice.fhirId]]);
    expect(detailOf(one[0]!)).toEqual({ route: 'practitioner.observations' });
  });

  it("records an admin's searches and reads with the patients of what came back", async () => {
    const search = await read('/fhir/Observation?_count=100', admin);
    expect(patientsOf(search)).toEqual([alice.fhirId, ann.fhirId, bob.fhirId].sort());
    const [bobRead] = await read(`/fhir/Patient/${bob.fhirId}`, admin);
    expect(bobRead).toMatchObject({ action: 'fhir.read', actor_role: 'admin', patient_id: bob.fhirId });
    const [obsRead] = await read(`/fhir/Observation/${observations[bob.fhirId]![0]}`, admin);
    expect(obsRead).toMatchObject({ target_fhir_type: 'Observation', patient_id: bob.fhirId });
  });

  it("answers who looked at a patient's record, and who tried, with ?patient=", async () => {
    const attempt = await gw.call(`/fhir/Observation/${observations[bob.fhirId]![0]}`, { token: tokenAlice });
    expect(attempt.status).toBe(404);
    await gw.settle();
    const entries = async (query: string) => {
      const response = await gw.call(`/admin/audit?${query}`, { token: admin });
      expect(response.status).toBe(200);
      return ((await response.json()) as { entries: Entry[] }).entries;
    };
    const aliceRecord = await entries(`patient=${alice.fhirId}&limit=200`);
    expect(aliceRecord.length).toBeGreaterThan(5);
    expect(aliceRecord.every((e) => e.patient_id === alice.fhirId)).toBe(true);
    expect(new Set(aliceRecord.map((e) => e.actor.role))).toEqual(
      new Set(['patient', 'practitioner', 'admin']),
    );
    const readers = aliceRecord.map((e) => e.actor.user_id);
    expect(readers).toContain(alice.userId);
    expect(readers).toContain(doctor.userId);
    const bobDenied = await entries(`patient=${bob.fhirId}&outcome=denied`);
    expect(bobDenied).toEqual([
      expect.objectContaining({
        action: 'fhir.read',
        error_code: 'out_of_scope',
        actor: { user_id: alice.userId, role: 'patient' },
      }),
    ]);
    const bobRecord = await entries(`patient=${bob.fhirId}`);
    expect(bobRecord.some((e) => e.actor.role === 'practitioner')).toBe(false);
    expect(bobRecord.filter((e) => e.outcome === 'success').every((e) => e.actor.role === 'admin')).toBe(
      true,
    );
    // paging: the cursor walks the same patient's entries
    const first = await gw.call(`/admin/audit?patient=${alice.fhirId}&limit=2`, { token: admin });
    const page1 = (await first.json()) as { entries: Entry[]; next_cursor: string };
    const second = await gw.call(`/admin/audit?patient=${alice.fhirId}&limit=2&cursor=${page1.next_cursor}`, {
      token: admin,
    });
    const page2 = (await second.json()) as { entries: (Entry & { id: string })[] };
    expect(page2.entries).toHaveLength(2);
    expect(page2.entries.every((e) => e.patient_id === alice.fhirId)).toBe(true);
    expect((await gw.call('/admin/audit?patient=not%20an%20id', { token: admin })).status).toBe(400);
    // a date alone is taken too: the refusal says so (review S3: it named the date-time only)
    expect((await gw.call('/admin/audit?from=2026-12-05', { token: admin })).status).toBe(200);
    const impossible = await gw.call('/admin/audit?from=2026-02-30', { token: admin });
    expect(impossible.status).toBe(400);
    expect(((await impossible.json()) as { errors: { message: string }[] }).errors[0]?.message).toContain(
      'or a date (2026-11-20)',
    );
  });

  it('exports the trail as a Bundle of R4 AuditEvents in the BALP shape (?format=fhir)', async () => {
    await gw.settle();
    const response = await gw.call(`/admin/audit?format=fhir&patient=${alice.fhirId}&limit=200`, {
      token: admin,
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/fhir\+json/);
    const bundle = (await response.json()) as Bundle<AuditEvent>;
    expect(bundle).toMatchObject({ resourceType: 'Bundle', type: 'searchset' });
    validateResource(bundle);
    const events = (bundle.entry ?? []).map((e) => e.resource!);
    expect(events.length).toBeGreaterThan(5);
    for (const event of events) {
      validateResource(event);
      expect(event.type).toMatchObject({
        system: 'http://terminology.hl7.org/CodeSystem/audit-event-type',
        code: 'rest',
      });
      expect(event.entity).toContainEqual(
        expect.objectContaining({
          what: { reference: `Patient/${alice.fhirId}` },
          role: expect.objectContaining({
            system: 'http://terminology.hl7.org/CodeSystem/object-role',
            code: '1',
          }),
        }),
      );
      expect(event.source.observer.display).toBe('fhir-facade');
    }
    const subtype = (e: AuditEvent) =>
      e.subtype?.find((s) => s.system === 'http://hl7.org/fhir/restful-interaction')?.code;
    const readEvent = events.find((e) => subtype(e) === 'read')!;
    expect(readEvent).toMatchObject({ action: 'R', outcome: '0' });
    const user = readEvent.agent.find((a) => a.requestor)!;
    expect(user.type?.coding?.[0]).toMatchObject({ code: 'IRCP' });
    expect(user.role?.[0]?.text).toEqual(expect.any(String));
    expect(readEvent.agent.some((a) => a.network?.address && a.network.type === '2')).toBe(true);
    expect(readEvent.entity).toContainEqual(
      expect.objectContaining({ role: expect.objectContaining({ code: '4', display: 'Domain Resource' }) }),
    );
    const searchEvent = events.find((e) => subtype(e) === 'search-type')!;
    expect(searchEvent).toMatchObject({ action: 'E', outcome: '0' });
    expect(searchEvent.entity).toContainEqual(
      expect.objectContaining({ role: expect.objectContaining({ code: '24' }) }),
    );

    const denied = (await (
      await gw.call(`/admin/audit?format=fhir&patient=${bob.fhirId}&outcome=denied`, { token: admin })
    ).json()) as Bundle<AuditEvent>;
    expect(denied.entry?.[0]?.resource).toMatchObject({ outcome: '4', outcomeDesc: 'out_of_scope' });
    validateResource(denied.entry![0]!.resource!);
  });

  it('links the next page of the export', async () => {
    const response = await gw.call(`/admin/audit?format=fhir&patient=${alice.fhirId}&limit=1`, {
      token: admin,
    });
    const bundle = (await response.json()) as Bundle<AuditEvent>;
    const next = bundle.link?.find((l) => l.relation === 'next')?.url;
    expect(next).toMatch(/^http:\/\/gateway\.test\/admin\/audit\?/);
    const url = new URL(next!);
    expect(url.searchParams.get('patient')).toBe(alice.fhirId);
    const following = (await (
      await gw.call(`${url.pathname}${url.search}`, { token: admin })
    ).json()) as Bundle<AuditEvent>;
    expect(following.entry?.[0]?.resource?.id).toBeDefined();
    expect(following.entry?.[0]?.resource?.id).not.toBe(bundle.entry?.[0]?.resource?.id);
  });

  // after the tests above: they count bob's denied entries and his record's readers
  it('records a search naming a patient outside the scope as denied, naming that patient', async () => {
    const search = async (query: string, token: string) => {
      const response = await gw.call(`/fhir/Observation?${query}`, { token });
      expect(response.status, query).toBe(200);
      const bundle = (await response.json()) as Bundle;
      return { found: bundle.entry?.length ?? 0, audit: await gw.auditOf(requestIdOf(response)) };
    };
    const deniedAt = (patientId: string, role: string) =>
      expect.objectContaining({
        action: 'fhir.search',
        outcome: 'denied',
        error_code: 'out_of_scope',
        actor_role: role,
        patient_id: patientId,
      });
    // a patient, and a practitioner naming someone outside their panel: empty, an attempt at that patient
    const byPatient = await search(`subject=Patient/${bob.fhirId}`, tokenAlice);
    expect(byPatient).toEqual({ found: 0, audit: [deniedAt(bob.fhirId, 'patient')] });
    const byDoctor = await search(`subject=Patient/${bob.fhirId}`, tokenDoc);
    expect(byDoctor).toEqual({ found: 0, audit: [deniedAt(bob.fhirId, 'practitioner')] });
    // one outside among panel members: the whole search is empty, as a patient's is
    const mixed = await search(`subject=Patient/${alice.fhirId},Patient/${bob.fhirId}`, tokenDoc);
    expect(mixed).toEqual({ found: 0, audit: [deniedAt(bob.fhirId, 'practitioner')] });
    // the panel's own patient: found, a success naming her
    const own = await search(`subject=Patient/${alice.fhirId}`, tokenDoc);
    expect(own.found).toBe(2);
    expect(own.audit).toEqual([
      expect.objectContaining({ outcome: 'success', patient_id: alice.fhirId, actor_role: 'practitioner' }),
    ]);
    // the slim endpoint of a patient off the panel, or of no one: 404 alike, each an attempt at that id
    for (const patientId of [bob.fhirId, 'no-such-patient']) {
      const slim = await gw.call(`/practitioner/patients/${patientId}/observations`, { token: tokenDoc });
      expect(slim.status).toBe(404);
      expect(await gw.auditOf(requestIdOf(slim))).toEqual([deniedAt(patientId, 'practitioner')]);
    }
  });
});
