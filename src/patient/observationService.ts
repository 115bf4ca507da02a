import type { Bundle, Observation, Patient, Resource } from '@medplum/fhirtypes';
import { AppError } from '../errors.js';
import { inScope, type Scope } from '../fhir/compartment.js';
import { cursorForLink, verifyCursor } from '../fhir/links.js';
import { narrowSearch } from '../fhir/searchPolicy.js';
import type { AppDeps, Caller } from '../http/types.js';
import { type ObservationDto, toObservationDto } from './observationDto.js';

/**
 * Scoped, paged searches behind the slim endpoints. The scope comes from the verified token
 * only; the same narrowing and response check as the /fhir passthrough apply. Cursors are
 * signed, bound to the caller and to the route they were issued on, and expire.
 */

export interface ObservationFilters {
  code?: string | undefined;
  category?: string | undefined;
  from?: string | undefined;
  to?: string | undefined;
  limit: number;
  cursor?: string | undefined;
}

export interface Page<T> {
  readonly items: T[];
  readonly next_cursor: string | null;
}

function invalidCursor(): AppError {
  return new AppError('validation_failed', {
    errors: [{ path: 'cursor', message: 'is not valid for you, or has expired' }],
  });
}

/** Fetches a page: the first from `params`, later ones from a verified cursor. */
async function fetchPage<T extends Resource>(
  deps: AppDeps,
  caller: Caller,
  route: string,
  type: string,
  first: () => URLSearchParams | undefined,
  cursor: string | undefined,
): Promise<{ bundle: Bundle<T> | undefined; next: string | null }> {
  let query: URLSearchParams | undefined;
  if (cursor) {
    const relative = verifyCursor(deps.secrets.cursorKey, cursor, caller.userId, route, deps.clock.now());
    const [path, search = ''] = relative?.split('?', 2) ?? [];
    if (path !== type) throw invalidCursor();
    query = new URLSearchParams(search);
  } else {
    query = first();
  }
  if (!query) return { bundle: undefined, next: null };
  const response = await deps.fhir.request<Bundle<T>>({
    method: 'GET',
    path: type,
    query,
  });
  if (response.status === 400) {
    throw new AppError('validation_failed', { detail: 'The FHIR server refused the search.' });
  }
  if (response.status >= 400 || response.body?.resourceType !== 'Bundle') {
    throw new AppError('upstream_error', { cause: new Error(`search answered ${response.status}`) });
  }
  const nextUrl = response.body.link?.find((l) => l.relation === 'next')?.url;
  const scope = { key: deps.secrets.cursorKey, userId: caller.userId, route, now: deps.clock.now() };
  const next = nextUrl ? (cursorForLink(scope, nextUrl, deps.fhir.baseUrl) ?? null) : null;
  return { bundle: response.body, next };
}

/** Observations inside `scope`, newest first, as DTOs. */
export async function searchObservations(
  deps: AppDeps,
  caller: Caller,
  scope: Scope,
  filters: ObservationFilters,
  route: string,
): Promise<Page<ObservationDto>> {
  const first = () => {
    const params = new URLSearchParams({ _sort: '-date', _count: String(filters.limit) });
    if (filters.code) params.set('code', filters.code);
    if (filters.category) params.set('category', filters.category);
    if (filters.from) params.append('date', `ge${filters.from}`);
    if (filters.to) params.append('date', `le${filters.to}`);
    const narrowed = narrowSearch('Observation', params, scope);
    return narrowed.kind === 'empty' ? undefined : narrowed.params;
  };
  const { bundle, next } = await fetchPage<Observation>(
    deps,
    caller,
    route,
    'Observation',
    first,
    filters.cursor,
  );
  const items = (bundle?.entry ?? [])
    .map((e) => e.resource)
    .filter((r): r is Observation => r?.resourceType === 'Observation' && inScope(r, scope))
    .map(toObservationDto);
  return { items, next_cursor: next };
}

/** Patients assigned to a practitioner (Patient.generalPractitioner), re-checked entry by entry. */
export async function searchAssignedPatients(
  deps: AppDeps,
  caller: Caller,
  practitionerId: string,
  filters: { limit: number; cursor?: string | undefined },
  route: string,
): Promise<Page<Patient>> {
  const reference = `Practitioner/${practitionerId}`;
  const first = () =>
    new URLSearchParams({ 'general-practitioner': reference, _count: String(filters.limit) });
  const { bundle, next } = await fetchPage<Patient>(deps, caller, route, 'Patient', first, filters.cursor);
  const items = (bundle?.entry ?? [])
    .map((e) => e.resource)
    .filter(
      (p): p is Patient =>
        p?.resourceType === 'Patient' && !!p.generalPractitioner?.some((gp) => gp.reference === reference),
    );
  return { items, next_cursor: next };
}
