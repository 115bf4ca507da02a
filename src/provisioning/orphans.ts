import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../../db/schema.js';

/**
 * FHIR resources no account uses: a create the gateway could not undo, or one that landed after
 * its request gave up. Listed for an operator (GET /admin/provisioning/orphans) until an account
 * takes the resource after all.
 */

type Db = Kysely<Database> | Transaction<Database>;

export interface NewOrphan {
  readonly id: string;
  readonly fhirType: string;
  readonly fhirId: string;
  readonly reason: string;
  readonly requestId: string | null;
  readonly createdAt: string;
}

export async function insertOrphan(db: Db, orphan: NewOrphan): Promise<void> {
  await db
    .insertInto('fhir_orphans')
    .values({
      id: orphan.id,
      fhir_type: orphan.fhirType,
      fhir_id: orphan.fhirId,
      reason: orphan.reason,
      request_id: orphan.requestId,
      created_at: orphan.createdAt,
      resolved_at: null,
    })
    .execute();
}

/** The resource is an orphan no longer: an account uses it. */
export async function resolveOrphan(db: Db, fhirType: string, fhirId: string, at: string): Promise<void> {
  await db
    .updateTable('fhir_orphans')
    .set({ resolved_at: at })
    .where('fhir_type', '=', fhirType)
    .where('fhir_id', '=', fhirId)
    .where('resolved_at', 'is', null)
    .execute();
}

/** Orphans not resolved, newest first. */
export function unresolvedOrphans(db: Db) {
  return db
    .selectFrom('fhir_orphans')
    .selectAll()
    .where('resolved_at', 'is', null)
    .orderBy('id', 'desc')
    .execute();
}
