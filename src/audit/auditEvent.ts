import type { NewAuditEntry } from '../../db/schema.js';

/**
 * One audit_log entry as a FHIR R4 AuditEvent (https://hl7.org/fhir/R4/auditevent.html), so
 * FHIR-native tools see the gateway's trail. Carries the same facts as the row: no codes,
 * passwords, tokens or clinical values.
 */

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const ACCOUNT_SYSTEM = 'urn:fhir-facade:user';

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

// C create, R read, U update, D delete, E execute
function eventAction(action: string): 'C' | 'R' | 'U' | 'D' | 'E' {
  if (/\.(create|provision)/.test(action)) return 'C';
  if (/\.(update|deactivate|activate|reissue)/.test(action)) return 'U';
  if (/\.delete/.test(action)) return 'D';
  if (/\.(read|list)/.test(action)) return 'R';
  return 'E';
}

const OUTCOME = { success: '0', failed: '8', denied: '4' } as const;

export function toFhirAuditEvent(entry: NewAuditEntry, source: string): Record<string, unknown> {
  const who = entry.actor_user_id
    ? { identifier: { system: ACCOUNT_SYSTEM, value: entry.actor_user_id } }
    : { display: 'anonymous or system' };
  const entity: Record<string, unknown>[] = [];
  if (entry.target_fhir_type && entry.target_fhir_id) {
    entity.push({ what: { reference: `${entry.target_fhir_type}/${entry.target_fhir_id}` } });
  }
  if (entry.target_user_id)
    entity.push({ what: { identifier: { system: ACCOUNT_SYSTEM, value: entry.target_user_id } } });
  return {
    resourceType: 'AuditEvent',
    type: eventType(entry.action),
    subtype: [{ system: 'urn:fhir-facade:audit-action', code: entry.action }],
    action: eventAction(entry.action),
    recorded: entry.occurred_at,
    outcome: OUTCOME[entry.outcome],
    agent: [
      {
        who,
        requestor: true,
        ...(entry.actor_role ? { role: [{ text: entry.actor_role }] } : {}),
        ...(entry.client_ip ? { network: { address: entry.client_ip, type: '2' } } : {}),
      },
    ],
    source: {
      observer: { display: source },
      type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '3' }],
    },
    ...(entity.length ? { entity } : {}),
    ...(entry.request_id
      ? { extension: [{ url: 'urn:fhir-facade:request-id', valueString: entry.request_id }] }
      : {}),
  };
}
