import type { Observation, Patient } from '@medplum/fhirtypes';
import type { ScopedFhir, SearchPage } from '../fhir/scopedFhir.js';
import { asBuiltByGateway, unexpectedUpstreamBody } from '../fhir/upstreamStatus.js';
import { type ObservationDto, toObservationDto } from './observationDto.js';
import { ObservationDtoSchema } from './patientSchemas.js';
import { upstreamDto } from './upstreamDto.js';

/**
 * Paged searches behind the slim endpoints, through the caller's scoped FHIR access: the same
 * narrowing, response check, cursors and upstream-status mapping as the /fhir passthrough.
 * A cursor works only on the route it was issued on (`route`), for the caller it was issued to.
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

/** The first page from `query`, a later one from the cursor; bad cursors are 400 `cursor`. */
async function pageOf<T extends Observation | Patient>(
  fhir: ScopedFhir,
  type: T['resourceType'],
  query: () => URLSearchParams,
  cursor: string | undefined,
  route: string,
): Promise<SearchPage<T>> {
  return asBuiltByGateway(cursor ? fhir.page<T>(cursor, type, route) : fhir.search<T>(type, query(), route));
}

function matches<T extends Observation | Patient>(page: SearchPage<T>, type: T['resourceType']): T[] {
  return (page.bundle.entry ?? []).flatMap((e) => (e.resource?.resourceType === type ? [e.resource] : []));
}

/**
 * A first page holds at most the `_count` it asked for. A server that answered more ignored it
 * (one answered 150,000 Observations to `_count=5`): cutting the page would skip records the next
 * cursor never shows, so it is the server's fault, 502. A later page's size is the server's link's.
 */
function withinLimit<T>(items: T[], filters: { limit: number; cursor?: string | undefined }): T[] {
  if (!filters.cursor && items.length > filters.limit)
    throw unexpectedUpstreamBody(`${items.length} entries to _count=${filters.limit}`);
  return items;
}

/** Observations in the caller's scope (optionally of one patient), newest first, as DTOs. */
export async function searchObservations(
  fhir: ScopedFhir,
  filters: ObservationFilters,
  route: string,
  patientId?: string,
): Promise<Page<ObservationDto>> {
  const query = () => {
    const params = new URLSearchParams({ _sort: '-date', _count: String(filters.limit) });
    if (patientId) params.set('subject', `Patient/${patientId}`);
    if (filters.code) params.set('code', filters.code);
    if (filters.category) params.set('category', filters.category);
    if (filters.from) params.append('date', `ge${filters.from}`);
    if (filters.to) params.append('date', `le${filters.to}`);
    return params;
  };
  const page = await pageOf<Observation>(fhir, 'Observation', query, filters.cursor, route);
  const items = withinLimit(matches(page, 'Observation'), filters).map((o) =>
    upstreamDto(ObservationDtoSchema, () => toObservationDto(o)),
  );
  return { items, next_cursor: page.next };
}

/** The caller's patients (for a practitioner: the assigned ones), one page. */
export async function searchPatients(
  fhir: ScopedFhir,
  filters: { limit: number; cursor?: string | undefined },
  route: string,
): Promise<Page<Patient>> {
  const query = () => new URLSearchParams({ _count: String(filters.limit) });
  const page = await pageOf<Patient>(fhir, 'Patient', query, filters.cursor, route);
  return { items: withinLimit(matches(page, 'Patient'), filters), next_cursor: page.next };
}
