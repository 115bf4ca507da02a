import { scopedFhir, slimCursorRoute } from '../fhir/scopedFhir.js';
import { asBuiltByGateway } from '../fhir/upstreamStatus.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import {
  type ObservationFilters,
  searchObservations,
  searchPatients,
} from '../patient/observationService.js';
import { patientDto } from '../patient/patientService.js';

/** GET /practitioner/patients: the caller's assigned patients as DTOs (the panel is narrowed on the server). */
export async function myPatients(
  deps: AppDeps,
  caller: Caller,
  ctx: RequestContext,
  filters: { limit: number; cursor?: string | undefined },
) {
  const page = await searchPatients(
    scopedFhir(deps, caller, ctx),
    filters,
    slimCursorRoute('practitioner.patients'),
  );
  return { patients: page.items.map((p) => patientDto(p)), next_cursor: page.next_cursor };
}

/**
 * One assigned patient's observations; an unassigned patient answers 404 exactly like a missing
 * one. Asked of the panel lookup (cached), not by reading the Patient: one upstream call, the search.
 */
export async function patientObservations(
  deps: AppDeps,
  caller: Caller,
  ctx: RequestContext,
  patientId: string,
  filters: ObservationFilters,
) {
  const fhir = scopedFhir(deps, caller, ctx);
  await asBuiltByGateway(
    fhir.assertPatientInScope(patientId, { action: 'fhir.search', type: 'Observation' }),
  );
  const route = slimCursorRoute('practitioner.observations', patientId);
  const page = await searchObservations(fhir, filters, route, patientId);
  return { observations: page.items, next_cursor: page.next_cursor };
}
