import type { Bundle, Patient } from '@medplum/fhirtypes';
import { AppError } from '../errors.js';
import type { AppDeps, Caller } from '../http/types.js';
import type { Scope } from './compartment.js';

/** Most patients a practitioner's scope follows; beyond it the answer is an error, never a partial scope. */
const MAX_ASSIGNED_PATIENTS = 1000;

/** Ids of the patients assigned to a practitioner (Patient.generalPractitioner), asked of the FHIR server. */
export async function assignedPatientIds(deps: AppDeps, practitionerId: string): Promise<Set<string>> {
  const response = await deps.fhir.request<Bundle<Patient>>({
    method: 'GET',
    path: 'Patient',
    query: new URLSearchParams({
      'general-practitioner': `Practitioner/${practitionerId}`,
      _count: String(MAX_ASSIGNED_PATIENTS),
      _elements: 'id,generalPractitioner',
    }),
  });
  if (response.status !== 200 || response.body?.resourceType !== 'Bundle') {
    throw new AppError('upstream_error', {
      cause: new Error(`assigned patients search answered ${response.status}`),
    });
  }
  const ids = new Set<string>();
  for (const entry of response.body.entry ?? []) {
    const patient = entry.resource;
    // re-checked here: the server's search is not trusted to have matched only this practitioner
    const assigned = patient?.generalPractitioner?.some(
      (gp) => gp.reference === `Practitioner/${practitionerId}`,
    );
    if (patient?.resourceType === 'Patient' && patient.id && assigned) ids.add(patient.id);
  }
  if (response.body.link?.some((l) => l.relation === 'next')) {
    throw new AppError('upstream_error', {
      cause: new Error('more assigned patients than the scope supports'),
    });
  }
  return ids;
}

/** The caller's reach, from the verified token only: admin all, patient their own, practitioner their patients. */
export async function resolveScope(deps: AppDeps, caller: Caller): Promise<Scope> {
  if (caller.role === 'admin') return { kind: 'all' };
  if (!caller.fhirId)
    return { kind: 'patients', patientIds: new Set(), self: { type: 'Patient', id: '-' }, canWrite: false };
  if (caller.role === 'patient') {
    return {
      kind: 'patients',
      patientIds: new Set([caller.fhirId]),
      self: { type: 'Patient', id: caller.fhirId },
      canWrite: false,
    };
  }
  return {
    kind: 'patients',
    patientIds: await assignedPatientIds(deps, caller.fhirId),
    self: { type: 'Practitioner', id: caller.fhirId },
    canWrite: true,
  };
}
