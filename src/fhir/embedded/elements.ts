import { tryGetDataType } from '@medplum/core';
import type { Bundle, Coding, Resource } from '@medplum/fhirtypes';

// `_elements` on read and search (https://hl7.org/fhir/R4/search.html#elements): only the named
// top-level elements leave, plus the ones every resource keeps, and the resource is tagged
// SUBSETTED so nobody writes it back over the complete one.

/** The tag R4 asks for on every resource whose elements were left out. */
export const SUBSETTED: Readonly<Coding> = Object.freeze({
  system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue',
  code: 'SUBSETTED',
  display: 'subsetted',
});

/** Kept whatever `_elements` names: what makes the resource a resource (type, identity, version). */
const ALWAYS_KEPT = new Set(['resourceType', 'id', 'meta']);

/**
 * The element names of every `_elements` value (repeated parameters and comma lists alike),
 * or undefined when the request has none.
 */
export function parseElements(values: readonly string[]): string[] | undefined {
  if (values.length === 0) return undefined;
  return values.flatMap((value) => value.split(',').map((name) => name.trim())).filter(Boolean);
}

/**
 * The elements that apply to a resource of `type`: `name` applies to the type searched or read
 * (`searchedType`), `Type.name` to resources of that type (e.g. included ones); undefined when
 * none applies, and the resource is then left whole.
 */
function elementsFor(
  type: string,
  searchedType: string,
  elements: readonly string[],
): Set<string> | undefined {
  const names = new Set<string>();
  for (const element of elements) {
    const dot = element.indexOf('.');
    if (dot < 0) {
      if (type === searchedType) names.add(element);
    } else if (element.slice(0, dot) === type) {
      names.add(element.slice(dot + 1));
    }
  }
  return names.size > 0 ? names : undefined;
}

/** Whether a JSON property belongs to a named element: `value` covers `valueQuantity`, `birthDate` covers `_birthDate`. */
function belongs(key: string, names: ReadonlySet<string>, choices: ReadonlySet<string>): boolean {
  const name = key.startsWith('_') ? key.slice(1) : key;
  if (names.has(name)) return true;
  for (const choice of choices) {
    if (name.startsWith(choice) && /^[A-Z]/.test(name.slice(choice.length))) return true;
  }
  return false;
}

/** A copy of `resource` with only the named elements (and resourceType, id, meta), tagged SUBSETTED. */
function subsetResource<T extends Resource>(resource: T, names: ReadonlySet<string>): T {
  const definition = tryGetDataType(resource.resourceType)?.elements ?? {};
  // a choice element is named without its type: `value` or `value[x]` for valueQuantity, valueString ...
  const choices = new Set(
    Object.keys(definition)
      .filter((key) => key.endsWith('[x]'))
      .map((key) => key.slice(0, -3))
      .filter((base) => names.has(base) || names.has(`${base}[x]`)),
  );
  const subset: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(resource)) {
    if (ALWAYS_KEPT.has(key) || belongs(key, names, choices)) subset[key] = value;
  }
  const tags = resource.meta?.tag ?? [];
  const tagged = tags.some((t) => t.system === SUBSETTED.system && t.code === SUBSETTED.code);
  subset.meta = { ...resource.meta, tag: tagged ? tags : [...tags, { ...SUBSETTED }] };
  return subset as T;
}

/**
 * Applies `_elements` to a read's resource or a searchset's entries (copies; nothing stored
 * changes). Resources no named element applies to are left whole.
 */
export function applyElements(
  resource: Resource,
  searchedType: string,
  elements: readonly string[],
): Resource {
  if (resource.resourceType !== 'Bundle') {
    const names = elementsFor(resource.resourceType, searchedType, elements);
    return names ? subsetResource(resource, names) : resource;
  }
  const bundle = resource as Bundle;
  if (bundle.type !== 'searchset' || !bundle.entry) return bundle;
  return {
    ...bundle,
    entry: bundle.entry.map((entry) => {
      const names = entry.resource && elementsFor(entry.resource.resourceType, searchedType, elements);
      return names && entry.resource ? { ...entry, resource: subsetResource(entry.resource, names) } : entry;
    }),
  };
}
