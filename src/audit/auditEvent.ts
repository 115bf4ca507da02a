import type { NewAuditEntry } from '../../db/schema.js';

/**
 * One audit_log entry as a FHIR R4 AuditEvent (https://hl7.org/fhir/R4/auditevent.html), so
 * FHIR-native tools see the gateway's trail. Reads and searches of patient data follow the IHE
 * Basic Audit Log Patterns (https://profiles.ihe.net/ITI/BALP/: Read and Query, Patient
 * variants): the user, the client and the gateway as agents, the patient and the data (or the
 * query) as entities, one event per patient. Carries the same facts as the row: no codes,
 * passwords, tokens or clinical values — and, unlike BALP's `entity.query`, no query string,
 * because search values can name a patient or a diagnosis.
 */

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const ACCOUNT_SYSTEM = 'urn:fhir-facade:user';
const ACTION_SYSTEM = 'urn:fhir-facade:audit-action';
const RESTFUL_INTERACTION = 'http://hl7.org/fhir/restful-interaction';
const ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
const BALP_ENTITY_TYPE = 'https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType';

/** Where the events come from: the gateway's name and public base URL. */
export interface AuditSource {
  readonly name: string;
  readonly baseUrl?: string;
  /**
   * Name the resources an event is about by logical reference (`Reference.identifier`), not a
   * literal one: for the copy posted to the FHIR server, where a literal reference would pin its
   * target (HAPI refuses to delete a resource an AuditEvent references, and refuses an AuditEvent
   * about a deleted one).
   */
  readonly logicalReferences?: boolean;
}

/** The system of logical references to resources on the FHIR server (`Observation/1000`). */
const RESOURCE_SYSTEM = 'urn:fhir-facade:fhir-resource';

type Json = Record<string, unknown>;
type Entry = Pick<
  NewAuditEntry,
  | 'action'
  | 'outcome'
  | 'occurred_at'
  | 'actor_user_id'
  | 'actor_role'
  | 'target_user_id'
  | 'target_fhir_type'
  | 'target_fhir_id'
  | 'request_id'
  | 'client_ip'
  | 'detail'
  | 'patient_id'
  | 'error_code'
>;

const OUTCOME = { success: '0', denied: '4', failed: '8' } as const;

const isAccess = (action: string) => action === 'fhir.read' || action === 'fhir.search';

// Login events are "User Authentication" (DICOM 110114); everything else is a RESTful operation.
function eventType(action: string) {
  return action.startsWith('auth.')
    ? { system: DCM, code: '110114', display: 'User Authentication' }
    : {
        system: 'http://terminology.hl7.org/CodeSystem/audit-event-type',
        code: 'rest',
        display: 'RESTful Operation',
      };
}

// C create, R read, U update, D delete, E execute (a search is E in BALP's Query pattern)
function eventAction(action: string): 'C' | 'R' | 'U' | 'D' | 'E' {
  if (action === 'fhir.search') return 'E';
  if (/\.(create|provision)/.test(action)) return 'C';
  if (/\.(update|deactivate|activate|reissue|patch)/.test(action)) return 'U';
  if (/\.delete/.test(action)) return 'D';
  if (/\.(read|list)/.test(action)) return 'R';
  return 'E';
}

function detailOf(entry: Entry): Json {
  try {
    return entry.detail ? (JSON.parse(entry.detail) as Json) : {};
  } catch {
    return {};
  }
}

/** The FHIR interaction of an access event: read, vread, history-instance, search-type or search-system. */
function interaction(entry: Entry, detail: Json): string {
  if (entry.action === 'fhir.search') return entry.target_fhir_type ? 'search-type' : 'search-system';
  if (detail.interaction === 'vread') return 'vread';
  if (detail.interaction === 'history') return 'history-instance';
  return 'read';
}

function subtypes(entry: Entry, detail: Json): Json[] {
  const own = { system: ACTION_SYSTEM, code: entry.action };
  if (!isAccess(entry.action)) return [own];
  const code = interaction(entry, detail);
  return [{ system: RESTFUL_INTERACTION, code, display: code }, own];
}

const IRCP = {
  coding: [
    {
      system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType',
      code: 'IRCP',
      display: 'information recipient',
    },
  ],
};

function roleId(code: '110152' | '110153'): Json {
  const display = code === '110152' ? 'Destination Role ID' : 'Source Role ID';
  return { coding: [{ system: DCM, code, display }] };
}

function userAgent(entry: Entry): Json {
  return {
    who: entry.actor_user_id
      ? { identifier: { system: ACCOUNT_SYSTEM, value: entry.actor_user_id } }
      : { display: 'anonymous or system' },
    requestor: true,
    ...(entry.actor_role ? { role: [{ text: entry.actor_role }] } : {}),
  };
}

const ipAddress = (address: string) => ({ address, type: '2' });

/**
 * Access events have BALP's three agents: the user (information recipient), the client (its
 * network address) and the gateway. Other events keep one agent, the user with the address.
 */
function agents(entry: Entry, source: AuditSource): Json[] {
  const user = userAgent(entry);
  if (!isAccess(entry.action))
    return [{ ...user, ...(entry.client_ip ? { network: ipAddress(entry.client_ip) } : {}) }];
  // BALP: for a read the client is the "Destination Role ID" (the data flows to it); for a query the "Source"
  const read = entry.action === 'fhir.read';
  const client = entry.client_ip
    ? [
        {
          type: roleId(read ? '110152' : '110153'),
          who: { display: 'client' },
          requestor: false,
          network: ipAddress(entry.client_ip),
        },
      ]
    : [];
  const server = {
    type: roleId(read ? '110153' : '110152'),
    who: { display: source.name },
    requestor: false,
    ...(source.baseUrl ? { network: { address: source.baseUrl, type: '5' } } : {}),
  };
  return [{ type: IRCP, ...user }, ...client, server];
}

const coding = (system: string, code: string, display: string) => ({ system, code, display });

function entities(entry: Entry, detail: Json, source: AuditSource): Json[] {
  const entity: Json[] = [];
  const what = (reference: string) =>
    source.logicalReferences
      ? { identifier: { system: RESOURCE_SYSTEM, value: reference }, display: reference }
      : { reference };
  if (entry.patient_id) {
    entity.push({
      what: what(`Patient/${entry.patient_id}`),
      type: coding(ENTITY_TYPE, '1', 'Person'),
      role: coding(OBJECT_ROLE, '1', 'Patient'),
    });
  }
  if (entry.action === 'fhir.search') {
    const route = typeof detail.route === 'string' ? ` (${detail.route})` : '';
    entity.push({
      type: coding(ENTITY_TYPE, '2', 'System Object'),
      role: coding(OBJECT_ROLE, '24', 'Query'),
      description: `search ${entry.target_fhir_type || 'all types'}${route}`,
    });
  } else if (entry.target_fhir_type && entry.target_fhir_id) {
    entity.push({
      what: what(`${entry.target_fhir_type}/${entry.target_fhir_id}`),
      ...(isAccess(entry.action)
        ? {
            type: coding(ENTITY_TYPE, '2', 'System Object'),
            role: coding(OBJECT_ROLE, '4', 'Domain Resource'),
          }
        : {}),
    });
  }
  if (entry.target_user_id)
    entity.push({ what: { identifier: { system: ACCOUNT_SYSTEM, value: entry.target_user_id } } });
  if (entry.request_id) {
    entity.push({
      what: { identifier: { value: entry.request_id } },
      type: coding(BALP_ENTITY_TYPE, 'XrequestId', 'X-Request-Id'),
    });
  }
  return entity;
}

/** The AuditEvent of one audit_log row (BALP shape for access events), without an id. */
export function toFhirAuditEvent(entry: Entry, source: AuditSource): Json {
  const detail = detailOf(entry);
  const entity = entities(entry, detail, source);
  return {
    resourceType: 'AuditEvent',
    type: eventType(entry.action),
    subtype: subtypes(entry, detail),
    action: eventAction(entry.action),
    recorded: entry.occurred_at,
    outcome: OUTCOME[entry.outcome],
    ...(entry.error_code ? { outcomeDesc: entry.error_code } : {}),
    agent: agents(entry, source),
    source: {
      observer: { display: source.name },
      type: [
        {
          system: 'http://terminology.hl7.org/CodeSystem/security-source-type',
          code: '4',
          display: 'Application Server',
        },
      ],
    },
    ...(entity.length ? { entity } : {}),
  };
}
