import type { Patient } from '@medplum/fhirtypes';
import { AppError } from '../errors.js';
import type { AppDeps, Caller } from '../http/types.js';
import {
  type ObservationFilters,
  searchAssignedPatients,
  searchObservations,
} from '../patient/observationService.js';
import { patientDto } from '../patient/patientService.js';

/** GET /practitioner/patients: the caller's assigned patients as DTOs. */
export async function myPatients(
  deps: AppDeps,
  caller: Caller,
  filters: { limit: number; cursor?: string | undefined },
) {
  if (!caller.fhirId) return { patients: [], next_cursor: null };
  const page = await searchAssignedPatients(deps, caller, caller.fhirId, filters, 'practitioner.patients');
  return { patients: page.items.map((p) => patientDto(deps, p)), next_cursor: page.next_cursor };
}

/** One assigned patient's observations; an unassigned patient answers 404 exactly like a missing one. */
export async function patientObservations(
  deps: AppDeps,
  caller: Caller,
  patientId: string,
  filters: ObservationFilters,
) {
  const response = await deps.fhir.request<Patient>({ method: 'GET', path: `Patient/${patientId}` });
  const assigned =
    response.status === 200 &&
    response.body?.resourceType === 'Patient' &&
    !!caller.fhirId &&
    !!response.body.generalPractitioner?.some((gp) => gp.reference === `Practitioner/${caller.fhirId}`);
  if (!assigned) throw new AppError('not_found');
  const scope = {
    kind: 'patients' as const,
    patientIds: new Set([patientId]),
    self: { type: 'Practitioner' as const, id: caller.fhirId ?? '-' },
    canWrite: false,
  };
  // the cursor is bound to this patient too: it cannot be replayed on another patient's route
  const page = await searchObservations(
    deps,
    caller,
    scope,
    filters,
    `practitioner.observations:${patientId}`,
  );
  return { observations: page.items, next_cursor: page.next_cursor };
}
