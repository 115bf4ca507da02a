import type { Patient } from '@medplum/fhirtypes';
import { AppError } from '../errors.js';
import type { Scope } from '../fhir/compartment.js';
import type { AppDeps, Caller } from '../http/types.js';
import { accountIdentifierSystem } from '../provisioning/provisioningService.js';
import { type ObservationFilters, searchObservations } from './observationService.js';
import { type PatientDto, toPatientDto } from './patientDto.js';

/** The patient's own scope, from the token's fhir_id only: query parameters and headers never change it. */
function ownScope(caller: Caller): Scope {
  const id = caller.fhirId ?? '-';
  return {
    kind: 'patients',
    patientIds: new Set(caller.fhirId ? [id] : []),
    self: { type: 'Patient', id },
    canWrite: false,
  };
}

export async function myObservations(deps: AppDeps, caller: Caller, filters: ObservationFilters) {
  const page = await searchObservations(deps, caller, ownScope(caller), filters, 'patient.observations');
  return { observations: page.items, next_cursor: page.next_cursor };
}

/** A Patient as a DTO, without the identifier the gateway uses internally. */
export function patientDto(deps: AppDeps, patient: Patient): PatientDto {
  return toPatientDto(patient, [accountIdentifierSystem(deps.config.publicBaseUrl)]);
}

export async function myProfile(deps: AppDeps, caller: Caller): Promise<PatientDto> {
  if (!caller.fhirId) throw new AppError('not_found');
  const response = await deps.fhir.request<Patient>({ method: 'GET', path: `Patient/${caller.fhirId}` });
  if (response.status !== 200 || response.body?.resourceType !== 'Patient') throw new AppError('not_found');
  return patientDto(deps, response.body);
}
