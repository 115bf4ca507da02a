import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import { isMember, type Membership, membershipOf, patientsIn, type Scope } from './compartment.js';

/**
 * The response check of a Bundle, as pure rules: which entries leave, what `total` may still
 * say, and whose data left (for the access events). scopedFhir.ts runs it on every search,
 * page and history, after the one panel lookup a practitioner's page may need.
 */

/** Which resource types the token may see (scopeGuard.ts's typesShown); undefined: all. */
export type TypesShown = ((type: string) => boolean) | undefined;

export type JudgedEntry<T extends Resource> = BundleEntry<T> & { resource: T };

export interface Checked<T extends Resource> {
  readonly bundle: Bundle<T>;
  /** The patients of the entries that left, from what the check computed. */
  readonly patients: ReadonlySet<string>;
}

/** The entries the check judges: every resource but an OperationOutcome, of a type the token may see. */
export function entriesToJudge<T extends Resource>(bundle: Bundle<T>, shown: TypesShown): JudgedEntry<T>[] {
  return (bundle.entry ?? []).filter(
    (e): e is JudgedEntry<T> =>
      !!e.resource &&
      e.resource.resourceType !== 'OperationOutcome' &&
      (shown === undefined || shown(e.resource.resourceType)),
  );
}

/**
 * The patients a kept resource belongs to, from its membership: no second FHIRPath pass for a
 * patient or a practitioner; admins' resources are evaluated once here.
 */
export function patientsOfKept(
  resource: Resource,
  membership: Membership,
  scope: Scope,
  upstreamBase: string,
): readonly string[] {
  if (scope.kind === 'all') return patientsIn(resource, upstreamBase);
  if (scope.kind === 'patient') return scope.directory.has(resource.resourceType) ? [] : [scope.patientId];
  if (typeof membership === 'object') return membership.anyOf;
  return resource.resourceType === 'Patient' && resource.id ? [resource.id] : [];
}

/** Whether an entry the search matched (not one it included, nor an OperationOutcome) was removed. */
export function removedMatch(all: readonly BundleEntry[], kept: readonly BundleEntry[]): boolean {
  const left = new Set(kept);
  return all.some(
    (e) =>
      !left.has(e) &&
      (e.search?.mode ?? 'match') === 'match' &&
      e.resource?.resourceType !== 'OperationOutcome',
  );
}

/**
 * Whether an entry without a resource stays: a deletion in a history (R4 http.html#history, its
 * `request` a DELETE). Every one to an admin; to a scoped role, who reads only the history of one
 * record they may read now, only that record's (`record`: `Type/id`).
 */
export function keptDeletion(entry: BundleEntry, bundle: Bundle, scope: Scope, record?: string): boolean {
  if (entry.resource || bundle.type !== 'history') return false;
  if (scope.kind === 'all') return true;
  const url: unknown = entry.request?.url;
  return (
    record !== undefined &&
    entry.request?.method === 'DELETE' &&
    typeof url === 'string' &&
    (url === record || url.startsWith(`${record}/_history/`))
  );
}

/**
 * The Bundle that may leave: the judged entries in scope (`memberships[i]` is `entries[i]`'s, and
 * `assigned` the panel members among them), with the patients they showed, and the deletions of
 * a history (`keptDeletion`, `record` the one whose history it is). `upstreamBase`: the FHIR
 * server's base (membershipOf). Nothing removed: the very Bundle, so the upstream's text can be
 * relayed as it came.
 */
export function keptInScope<T extends Resource>(
  bundle: Bundle<T>,
  entries: readonly JudgedEntry<T>[],
  scope: Scope,
  upstreamBase: string,
  assigned: ReadonlySet<string>,
  memberships: readonly Membership[] = entries.map((e) => membershipOf(e.resource, scope, upstreamBase)),
  record?: string,
): Checked<T> {
  const all = bundle.entry ?? [];
  const patients = new Set<string>();
  let kept: BundleEntry<T>[] = entries.filter((e, i) => {
    const membership = memberships[i] as Membership;
    if (!isMember(membership, assigned)) return false;
    for (const p of patientsOfKept(e.resource, membership, scope, upstreamBase)) patients.add(p);
    return true;
  });
  if (kept.length < all.length && bundle.type === 'history') {
    const judgedIn = new Set<BundleEntry<T>>(kept);
    kept = all.filter((e) => judgedIn.has(e) || keptDeletion(e, bundle, scope, record));
  }
  // a history's total counts every version, also those this caller may not see: judged page by
  // page it was there on some pages and gone on others (review S4), so a scoped caller never gets it
  const historyTotal = bundle.type === 'history' && scope.kind !== 'all' && bundle.total !== undefined;
  if (kept.length === all.length && !historyTotal) return { bundle, patients };
  const checked: Bundle<T> = { ...bundle, entry: kept };
  // `total` counts matches only: dropping it for a removed _include/_revinclude would tell that
  // something outside the scope refers to a match (someone else is prescribed this Medication)
  if (historyTotal || removedMatch(all, kept)) delete checked.total;
  return { bundle: checked, patients };
}
