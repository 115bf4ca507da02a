import { evalFhirPath, getSearchParameters, isReference } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { searchExpressionFor } from '../definitions.js';

/**
 * Which resources hold which reference, per reference search parameter: `Observation.subject`
 * -> `Patient/1` -> {obs ids}. Maintained on every write, it lets the embedded server answer
 * reference and chained searches (`subject:Patient.general-practitioner=Practitioner/9`) by
 * lookup instead of evaluating FHIRPath on every stored resource — the difference between a
 * practitioner's search costing the same at 10 and at 10,000 patients, or growing with them.
 */
export class ReferenceIndex {
  /** `Type.param` -> reference string -> ids of the resources holding it. */
  private readonly byParam = new Map<string, Map<string, Set<string>>>();
  /** `Type/id` -> what it was indexed under, so a new version can take its old entries out. */
  private readonly entriesOf = new Map<string, (readonly [string, string])[]>();

  /** Indexes a resource's current version, replacing what its previous version put in. */
  add(resource: Resource): void {
    if (!resource.id) return;
    this.remove(resource.resourceType, resource.id);
    const entries: (readonly [string, string])[] = [];
    for (const [code, expression] of referenceParams(resource.resourceType)) {
      const key = `${resource.resourceType}.${code}`;
      for (const value of evalFhirPath(expression, resource)) {
        if (!isReference(value)) continue;
        const byReference = this.byParam.get(key) ?? new Map<string, Set<string>>();
        this.byParam.set(key, byReference);
        const ids = byReference.get(value.reference) ?? new Set<string>();
        byReference.set(value.reference, ids);
        ids.add(resource.id);
        entries.push([key, value.reference]);
      }
    }
    if (entries.length > 0) this.entriesOf.set(`${resource.resourceType}/${resource.id}`, entries);
  }

  remove(resourceType: string, id: string): void {
    const key = `${resourceType}/${id}`;
    for (const [param, reference] of this.entriesOf.get(key) ?? []) {
      const ids = this.byParam.get(param)?.get(reference);
      ids?.delete(id);
      if (ids?.size === 0) this.byParam.get(param)?.delete(reference);
    }
    this.entriesOf.delete(key);
  }

  clear(): void {
    this.byParam.clear();
    this.entriesOf.clear();
  }

  /** Ids of `resourceType` resources whose `param` holds `reference` exactly (`Patient/1`). */
  holding(resourceType: string, param: string, reference: string): ReadonlySet<string> {
    return this.byParam.get(`${resourceType}.${param}`)?.get(reference) ?? EMPTY;
  }
}

const EMPTY: ReadonlySet<string> = new Set();
const paramsByType = new Map<string, (readonly [string, string])[]>();

/** A type's reference search parameters with their FHIRPath narrowed to that type (immutable once loaded). */
function referenceParams(resourceType: string): readonly (readonly [string, string])[] {
  let params = paramsByType.get(resourceType);
  if (!params) {
    params = Object.values(getSearchParameters(resourceType) ?? {}).flatMap((param) => {
      const expression =
        param.type === 'reference' ? searchExpressionFor(resourceType, param.code) : undefined;
      return expression ? [[param.code, expression] as const] : [];
    });
    paramsByType.set(resourceType, params);
  }
  return params;
}
