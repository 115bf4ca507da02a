import type { Patient } from '@medplum/fhirtypes';
import type { Clock } from '../clock.js';
import type { Peers } from '../clusterPeers.js';
import type { Logger } from '../logger.js';
import { generalPractitionersOf } from './compartment.js';
import type { FhirService } from './fhirService.js';

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

export interface PanelMembershipOptions {
  readonly fhir: FhirService;
  readonly clock: Clock;
  /** How long an answer is reused. */
  readonly ttlMs: number;
  /** Most (patient, practitioner) answers kept. */
  readonly maxEntries: number;
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
  const { fhir, clock, ttlMs, maxEntries } = options;
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

  const learn = (patient: Patient) => {
    if (patient.resourceType === 'Patient' && patient.id)
      remember(patient.id, generalPractitionersOf(patient));
  };

  const fresh = (patientId: string): Known | undefined => {
    const entry = known.get(patientId);
    return entry && clock.now().getTime() - entry.at < ttlMs ? entry : undefined;
  };

  const lookUp = async (patientIds: string[]) => {
    for (let i = 0; i < patientIds.length; i += LOOKUP_CHUNK) {
      const chunk = patientIds.slice(i, i + LOOKUP_CHUNK);
      const params = new URLSearchParams({ _id: chunk.join(','), _count: String(chunk.length) });
      const bundle = (await fhir.search<Patient>('Patient', params)).body;
      const seen = new Set<string>();
      for (const entry of bundle?.entry ?? []) {
        const patient = entry.resource;
        if (patient?.resourceType === 'Patient' && patient.id && chunk.includes(patient.id)) {
          learn(patient);
          seen.add(patient.id);
        }
      }
      // a patient the server does not return (deleted, never existed) is in nobody's panel
      for (const id of chunk) if (!seen.has(id)) remember(id, new Set());
    }
  };

  return {
    assigned: async (practitionerId, patientIds) => {
      const unique = [...new Set(patientIds)];
      const missing = unique.filter((id) => !fresh(id));
      if (missing.length > 0) await lookUp(missing);
      return new Set(unique.filter((id) => known.get(id)?.practitioners.has(practitionerId)));
    },
    forget: async (patientId) => {
      known.delete(patientId);
    },
    forgetAll: async () => known.clear(),
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
