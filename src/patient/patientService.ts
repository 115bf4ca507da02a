import type { Patient } from '@medplum/fhirtypes';
import { AppError } from '../errors.js';
import { scopedFhir, slimCursorRoute } from '../fhir/scopedFhir.js';
import { asBuiltByGateway } from '../fhir/upstreamStatus.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import { isAccountIdentifierSystem } from '../users/fhirIdentity.js';
import { type ObservationFilters, searchObservations } from './observationService.js';
import { type PatientDto, toPatientDto } from './patientDto.js';
import { PatientDtoSchema } from './patientSchemas.js';
import { upstreamDto } from './upstreamDto.js';

/** GET /patient/observations: the scope (the token's fhir_id) decides; query parameters and headers never widen it. */
export async function myObservations(
  deps: AppDeps,
  caller: Caller,
  ctx: RequestContext,
  filters: ObservationFilters,
) {
  const page = await searchObservations(
    scopedFhir(deps, caller, ctx),
    filters,
    slimCursorRoute('patient.observations'),
  );
  return { observations: page.items, next_cursor: page.next_cursor };
}

/** A Patient as a DTO, without the identifier the gateway uses internally (under any PUBLIC_BASE_URL). */
export function patientDto(patient: Patient): PatientDto {
  return upstreamDto(PatientDtoSchema, () => toPatientDto(patient, isAccountIdentifierSystem));
}

/** GET /patient/profile: a missing or deleted record is 404; an upstream failure stays a 502/504. */
export async function myProfile(deps: AppDeps, caller: Caller, ctx: RequestContext): Promise<PatientDto> {
  // a token without a linked record names no Patient: none is read, and none is guessed
  if (!caller.fhirId) throw new AppError('not_found');
  const { body } = await asBuiltByGateway(
    scopedFhir(deps, caller, ctx).read<Patient>('Patient', caller.fhirId),
  );
  if (!body) throw new AppError('not_found');
  return patientDto(body);
}
