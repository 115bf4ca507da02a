import type { Patient } from '@medplum/fhirtypes';
import type { Clock } from '../clock.js';
import type { Peers } from '../clusterPeers.js';
import type { Logger } from '../logger.js';
import { eachAtMost, withinMs } from './boundedCalls.js';
import { generalPractitionersOf } from './compartment.js';
import type { FhirService } from './fhirService.js';
import { relativeToBase } from './links.js';
import { unexpectedUpstreamBody } from './upstreamStatus.js';

/**
 * Which patients are in a practitioner's panel, answered for the few patients one page of
 * results names — never by listing the panel (a GP has 1,500–2,500 patients). The answer comes
 * from each Patient's own `generalPractitioner`, asked of the FHIR server in one search per page
 * (`Patient?_id=a,b,c`, at most LOOKUP_CHUNK ids, so the URL stays far below 8 KB) and kept for
 * a short time: a patient moved to another practitioner stays visible to the old one for at most
 * `ttlMs` (docs/security.md). Bounded: the oldest patients are forgotten first. Only those
 * lookups fill it: a Patient seen in a response may be an old version or a part of the record.
 */

/** Ids per upstream lookup: 50 UUIDs make a query of about 2 KB. */
const LOOKUP_CHUNK = 50;
/** Lookups of one page asked at once: a page of 1,000 patients needs 20, and the server is shared. */
const LOOKUPS_AT_ONCE = 4;

export interface PanelMembershipOptions {
  readonly fhir: FhirService;
  readonly clock: Clock;
  /** How long an answer is reused. */
  readonly ttlMs: number;
  /** Most (patient, practitioner) answers kept. */
  readonly maxEntries: number;
  /** What all the lookups of one page may take together: one FHIR timeout, not one per lookup. */
  readonly timeoutMs: number;
}

export interface PanelMembership {
  /** The subset of `patientIds` assigned to the practitioner. */
  assigned(practitionerId: string, patientIds: Iterable<string>): Promise<Set<string>>;
  /** Drops what is known of a patient, e.g. after the gateway itself changed the record. */
  forget(patientId: string): Promise<void>;
  /** Drops everything: after a write that may have changed any patient (a batch, a transaction). */
  forgetAll(): Promise<void>;
}

interface Known {
  /** The practitioners this patient names, as of `at`. */
  readonly practitioners: ReadonlySet<string>;
  readonly at: number;
}

export function createPanelMembership(options: PanelMembershipOptions): PanelMembership {
  const { fhir, clock, ttlMs, maxEntries, timeoutMs } = options;
  // Map keeps insertion order: re-inserting on every update makes the first key the oldest
  const known = new Map<string, Known>();

  const remember = (patientId: string, practitioners: ReadonlySet<string>) => {
    known.delete(patientId);
    known.set(patientId, { practitioners, at: clock.now().getTime() });
    while (known.size > maxEntries) {
      const oldest = known.keys().next().value;
      if (oldest === undefined) break;
      known.delete(oldest);
    }
  };

  // A lookup the server answered before a move committed may come back after forget() ran: kept,
  // its old generalPractitioner would count as fresh for a whole ttlMs (seen on HAPI: the former
  // practitioner read the moved patient for 30 s). Each forget takes a new generation; a lookup
  // keeps only what no forget since its start touched.
  let generation = 0;
  let allForgottenAt = 0;
  const forgottenAt = new Map<string, number>();
  let lookupsRunning = 0;
  const untouchedSince = (patientId: string, since: number) =>
    allForgottenAt <= since && (forgottenAt.get(patientId) ?? 0) <= since;
  const markForgotten = (patientId: string | null) => {
    generation++;
    // the marks matter only to lookups still running; past maxEntries, one mark for all of them
    if (patientId === null || forgottenAt.size >= maxEntries) {
      allForgottenAt = generation;
      forgottenAt.clear();
    } else forgottenAt.set(patientId, generation);
  };

  const learn = (patient: Patient, since: number) => {
    if (patient.resourceType === 'Patient' && patient.id && untouchedSince(patient.id, since))
      remember(patient.id, generalPractitionersOf(patient, fhir.baseUrl));
  };

  /** `now`: the time in ms, read at the question's start and after each lookup (not a Date per patient). */
  const fresh = (patientId: string, now: number): Known | undefined => {
    const entry = known.get(patientId);
    return entry && now - entry.at < ttlMs ? entry : undefined;
  };

  const lookUpChunk = async (chunk: string[]) => {
    const since = generation;
    const params = new URLSearchParams({ _id: chunk.join(','), _count: String(chunk.length) });
    const seen = new Set<string>();
    lookupsRunning++;
    try {
      let bundle = (await fhir.search<Patient>('Patient', params)).body;
      let seenBefore = -1;
      for (let pages = 1; ; pages++) {
        for (const entry of bundle?.entry ?? []) {
          const patient = entry.resource;
          if (patient?.resourceType === 'Patient' && patient.id && chunk.includes(patient.id)) {
            learn(patient, since);
            seen.add(patient.id);
          }
        }
        // a server whose pages are smaller than `_count` pages the answer: the patients on later
        // pages were read as nobody's, and remembered so for PANEL_CACHE_TTL
        const next = bundle?.link?.find((l) => l.relation === 'next')?.url;
        if (!next || seen.size === chunk.length) break;
        // the bare base is no page; a page that brought none of the patients asked is no progress
        const relative = relativeToBase(next, fhir.baseUrl);
        if (!relative || seen.size === seenBefore || pages >= LOOKUP_CHUNK)
          throw unexpectedUpstreamBody('a Patient lookup paged off FHIR_BASE_URL or without progress');
        seenBefore = seen.size;
        bundle = (await fhir.page<Patient>(relative)).body;
      }
    } finally {
      lookupsRunning--;
    }
    // a patient the server does not return (deleted, never existed) is in nobody's panel
    for (const id of chunk) if (!seen.has(id) && untouchedSince(id, since)) remember(id, new Set());
    if (lookupsRunning === 0) forgottenAt.clear();
  };

  // a few at a time, all within one FHIR_TIMEOUT_MS (boundedCalls.ts); what still runs after it
  // fills the cache for the next request
  const lookUp = (patientIds: string[]) => {
    const chunks: string[][] = [];
    for (let i = 0; i < patientIds.length; i += LOOKUP_CHUNK)
      chunks.push(patientIds.slice(i, i + LOOKUP_CHUNK));
    return withinMs(
      eachAtMost(chunks, LOOKUPS_AT_ONCE, lookUpChunk),
      timeoutMs,
      'panel lookups past one FHIR timeout',
    );
  };

  return {
    assigned: async (practitionerId, patientIds) => {
      const startedAt = clock.now().getTime();
      let now = startedAt;
      // fresh, or answered during this request (also with ttlMs 0)
      const current = (id: string) => {
        const entry = known.get(id);
        return entry && entry.at >= startedAt ? entry : fresh(id, now);
      };
      const unique = [...new Set(patientIds)];
      const missing = unique.filter((id) => !fresh(id, now));
      if (missing.length > 0) {
        await lookUp(missing);
        now = clock.now().getTime();
        // a patient forgotten while their lookup ran, or whose answer expired while it ran, is asked
        // again, once; still unknown, not assigned
        const overtaken = unique.filter((id) => !current(id));
        if (overtaken.length > 0) {
          await lookUp(overtaken);
          now = clock.now().getTime();
        }
      }
      return new Set(unique.filter((id) => current(id)?.practitioners.has(practitionerId)));
    },
    forget: async (patientId) => {
      markForgotten(patientId);
      known.delete(patientId);
    },
    forgetAll: async () => {
      markForgotten(null);
      known.clear();
    },
  };
}

const FORGET = 'panel-forget';

/**
 * With several workers, each keeps its own answers: a patient the gateway moved is forgotten by
 * every worker before the write is answered, so the former practitioner's next request, on
 * whichever worker, asks the FHIR server again (docs/security.md).
 */
export function forgettingInEveryWorker(
  panels: PanelMembership,
  peers: Peers,
  logger: Logger,
): PanelMembership {
  peers.on(FORGET, (patientId) =>
    typeof patientId === 'string' ? panels.forget(patientId) : panels.forgetAll(),
  );
  const tellEveryone = async (patientId: string | null) => {
    if (!(await peers.tell(FORGET, patientId)))
      logger.warn(
        'panels: another worker did not answer in time; it may show a moved patient for PANEL_CACHE_TTL',
      );
  };
  return {
    assigned: panels.assigned,
    forget: async (patientId) => {
      await Promise.all([panels.forget(patientId), tellEveryone(patientId)]);
    },
    forgetAll: async () => {
      await Promise.all([panels.forgetAll(), tellEveryone(null)]);
    },
  };
}
