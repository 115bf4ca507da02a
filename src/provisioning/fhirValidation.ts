import fs from 'node:fs';
import path from 'node:path';
import { OperationOutcomeError, validateResource } from '@medplum/core';
import type { Resource, StructureDefinition } from '@medplum/fhirtypes';
import { AppError, type FieldError } from '../errors.js';
import { loadFhirDefinitions } from '../fhir/definitions.js';
import { projectFile } from '../paths.js';
import { CONSTRAINT_FIELDS } from './profileSpecs.js';
import { isPastFhirDate } from './provisioningSchemas.js';

/** The profiles in fhir-profiles/ a provisioned resource must satisfy. */
export type ProvisionedType = 'Patient' | 'Practitioner';

const PROFILE_FILES: Readonly<Record<ProvisionedType, string>> = {
  Patient: 'ff-patient.json',
  Practitioner: 'ff-practitioner.json',
};

const PROFILE_DIR = projectFile('fhir-profiles');
// immutable files, read once per process
const profiles = new Map<ProvisionedType, StructureDefinition>();

function profileFor(type: ProvisionedType): StructureDefinition {
  let profile = profiles.get(type);
  if (!profile) {
    profile = JSON.parse(
      fs.readFileSync(path.join(PROFILE_DIR, PROFILE_FILES[type]), 'utf8'),
    ) as StructureDefinition;
    profiles.set(type, profile);
  }
  return profile;
}

function issuesToFieldErrors(outcome: {
  issue?: { expression?: string[]; details?: { text?: string } }[];
}): FieldError[] {
  return (outcome.issue ?? []).map((issue) => {
    const message = issue.details?.text ?? 'is not valid';
    const key = /^Constraint (ff-[a-z]+-\d+) not met: /.exec(message)?.[1];
    const field = key ? CONSTRAINT_FIELDS.get(key) : undefined;
    return {
      path: field ?? issue.expression?.[0] ?? '(resource)',
      message: key ? message.replace(/^Constraint ff-[a-z]+-\d+ not met: /, '') : message,
    };
  });
}

/**
 * Validates a resource against R4 and our profile (@medplum/core validateResource) before
 * anything is created. Throws a 400 naming each field at fault.
 */
export async function validateProvisionedResource(type: ProvisionedType, resource: unknown): Promise<void> {
  await loadFhirDefinitions();
  if (
    !resource ||
    typeof resource !== 'object' ||
    (resource as { resourceType?: unknown }).resourceType !== type
  ) {
    throw new AppError('validation_failed', {
      errors: [{ path: 'resourceType', message: `must be ${type}` }],
    });
  }
  let errors: FieldError[];
  try {
    const issues = validateResource(resource as Resource, { profile: profileFor(type) });
    errors = issuesToFieldErrors({ issue: issues.filter((i) => i.severity === 'error') });
  } catch (error) {
    if (!(error instanceof OperationOutcomeError)) throw error;
    errors = issuesToFieldErrors(error.outcome);
  }
  const birthDate = (resource as { birthDate?: unknown }).birthDate;
  const path = `${type}.birthDate`;
  // a raw create's birthDate is held to the slim `dob`'s rule (partial dates allowed, as FHIR does)
  if (typeof birthDate === 'string' && !errors.some((e) => e.path === path) && !isPastFhirDate(birthDate))
    errors.push({ path, message: 'must be a real date, not in the future' });
  if (errors.length > 0) throw new AppError('validation_failed', { errors });
}
