import type { Patient, Practitioner } from '@medplum/fhirtypes';
import { type AuditEvent, writeAudit } from '../audit/auditService.js';
import { generateAccessCode, hashAccessCode } from '../auth/accessCodes.js';
import { enqueueAccessCodeMail } from '../email/outbox.js';
import { AppError } from '../errors.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import { uuidv7 } from '../ids.js';
import {
  type Db,
  findUserByEmail,
  insertUser,
  isUniqueViolation,
  normalizeEmail,
} from '../users/userRepository.js';
import { displayName, emailOf } from './fhirMappers.js';
import { type ProvisionedType, validateProvisionedResource } from './fhirValidation.js';

/**
 * The flow that replaces "create Patient and User in one call" (DESIGN.md section 2):
 * email free? -> validate -> conditional create on the FHIR server -> one transaction: inactive
 * user + access-code mail in the outbox + audit -> wake the outbox worker. A failure after the
 * FHIR create deletes the resource again, or records it as an orphan: never a silent one.
 */

export type ProvisionedResource = Patient | Practitioner;

export interface ProvisionResult {
  readonly userId: string;
  readonly fhirId: string;
  /** The resource as the FHIR server stored it. */
  readonly resource: ProvisionedResource;
  readonly versionId: string | undefined;
  readonly email: string;
}

const ROLE_BY_TYPE = { Patient: 'patient', Practitioner: 'practitioner' } as const;

/** The identifier the gateway assigns: conditional create on it makes a retry find, not duplicate. */
export function accountIdentifierSystem(publicBaseUrl: string): string {
  return `${publicBaseUrl}/identifiers/account-email`;
}

function withAccountIdentifier(
  resource: ProvisionedResource,
  system: string,
  email: string,
): ProvisionedResource {
  const others = (resource.identifier ?? []).filter((i) => i.system !== system);
  return { ...resource, identifier: [...others, { system, value: email }] } as ProvisionedResource;
}

type AuditFields = Omit<AuditEvent, 'actorUserId' | 'actorRole' | 'requestId' | 'clientIp'>;
/** Writes an audit entry for this request; pass a transaction to commit it with the change. */
type Audit = (event: AuditFields, db?: Db) => Promise<void>;

function auditor(deps: AppDeps, actor: Caller, ctx: RequestContext): Audit {
  return (event, db = deps.db) =>
    writeAudit(db, deps.clock, {
      ...event,
      actorUserId: actor.userId,
      actorRole: actor.role,
      requestId: ctx.requestId,
      clientIp: ctx.clientIp,
    });
}

async function assertEmailFree(deps: AppDeps, email: string): Promise<void> {
  if (await findUserByEmail(deps.db, email)) {
    throw new AppError('conflict', { detail: 'An account with this email already exists.' });
  }
}

/** A Patient's generalPractitioner must name Practitioners that exist, or the assignment is meaningless. */
async function assertPractitionersExist(deps: AppDeps, resource: ProvisionedResource): Promise<void> {
  if (resource.resourceType !== 'Patient') return;
  const invalid = () =>
    new AppError('validation_failed', {
      errors: [{ path: 'general_practitioner_id', message: 'must be the id of an existing Practitioner' }],
    });
  for (const ref of resource.generalPractitioner ?? []) {
    const id = /^Practitioner\/([A-Za-z0-9\-.]{1,64})$/.exec(ref.reference ?? '')?.[1];
    if (!id) throw invalid();
    try {
      await deps.fhir.read('Practitioner', id);
    } catch (error) {
      // a missing Practitioner is the admin's mistake; an upstream failure stays a 502/504
      if (error instanceof AppError && error.code === 'not_found') throw invalid();
      throw error;
    }
  }
}

interface CreatedOnFhir {
  readonly resource: ProvisionedResource;
  readonly id: string;
  readonly versionId: string | undefined;
  /** false when the conditional create found the resource of an earlier attempt. */
  readonly createdNow: boolean;
}

async function createOnFhir(
  deps: AppDeps,
  resource: ProvisionedResource,
  email: string,
): Promise<CreatedOnFhir> {
  const system = accountIdentifierSystem(deps.config.publicBaseUrl);
  const withIdentifier = withAccountIdentifier(resource, system, email);
  let written: Awaited<ReturnType<typeof deps.fhir.create<ProvisionedResource>>>;
  try {
    written = await deps.fhir.create(resource.resourceType, withIdentifier, {
      ifNoneExist: `identifier=${encodeURIComponent(`${system}|${email}`)}`,
    });
  } catch (error) {
    // 412 on a conditional create: several resources already carry this identifier (FHIR http.html#ccreate)
    if (error instanceof AppError && error.code === 'precondition_failed')
      throw new AppError('duplicate_identifier', { cause: error });
    throw error;
  }
  return {
    resource: written.body ?? ({ ...withIdentifier, id: written.id } as ProvisionedResource),
    id: written.id,
    versionId: written.versionId,
    createdNow: written.status === 201,
  };
}

/** Undo of the FHIR create; when even that fails the resource is recorded for reconciliation. */
async function compensate(
  deps: AppDeps,
  created: CreatedOnFhir,
  audit: Audit,
  reason: string,
  requestId: string,
) {
  if (!created.createdNow) return;
  const type = created.resource.resourceType;
  try {
    await deps.fhir.delete(type, created.id);
    await audit({
      action: 'provisioning.compensate',
      outcome: 'success',
      targetFhirType: type,
      targetFhirId: created.id,
      detail: { reason },
    });
  } catch (error) {
    deps.logger.error(
      { err: error, fhir_type: type, fhir_id: created.id, req_id: requestId },
      'provisioning left an orphan',
    );
    await deps.db
      .insertInto('fhir_orphans')
      .values({
        id: uuidv7(),
        fhir_type: type,
        fhir_id: created.id,
        reason,
        request_id: requestId,
        created_at: deps.clock.now().toISOString(),
        resolved_at: null,
      })
      .execute();
    await audit({
      action: 'provisioning.orphan',
      outcome: 'failed',
      targetFhirType: type,
      targetFhirId: created.id,
      detail: { reason },
    });
  }
}

async function storeUserAndQueueMail(
  deps: AppDeps,
  type: ProvisionedType,
  created: CreatedOnFhir,
  email: string,
  audit: Audit,
): Promise<string> {
  const now = deps.clock.now();
  const code = generateAccessCode();
  const expiresAt = new Date(now.getTime() + deps.config.accessCodeTtlSeconds * 1000).toISOString();
  const userId = uuidv7(now.getTime());
  const role = ROLE_BY_TYPE[type];
  await deps.db.transaction().execute(async (trx) => {
    await insertUser(trx, {
      id: userId,
      email,
      role,
      fhir_resource_id: created.id,
      access_code_hash: hashAccessCode(deps.secrets.codeHmacKey, 'signup', email, code),
      access_code_expires_at: expiresAt,
      is_registered: 0,
      password_hash: null,
      created_by_admin: 1,
      created_at: now.toISOString(),
      updated_at: now.toISOString(),
      registered_at: null,
      last_login_at: null,
    });
    await enqueueAccessCodeMail(trx, deps.clock, deps.secrets.sealingKey, {
      template: 'access_code',
      to: email,
      name: displayName(created.resource),
      role,
      purpose: 'signup',
      code,
      expiresAt,
    });
    await audit(
      {
        action: 'provisioning.create',
        outcome: 'success',
        targetUserId: userId,
        targetFhirType: type,
        targetFhirId: created.id,
      },
      trx,
    );
  });
  return userId;
}

async function bestEffort(deps: AppDeps, step: () => Promise<void>): Promise<void> {
  try {
    await step();
  } catch (error) {
    deps.logger.error({ err: error }, 'could not record a provisioning failure');
  }
}

/** Provisions a Patient or Practitioner resource (already built from a DTO or sent raw). */
export async function provision(
  deps: AppDeps,
  actor: Caller,
  ctx: RequestContext,
  type: ProvisionedType,
  resource: unknown,
): Promise<ProvisionResult> {
  const audit = auditor(deps, actor, ctx);
  const failed = (reason: string) =>
    audit({ action: 'provisioning.create', outcome: 'failed', targetFhirType: type, detail: { reason } });
  let email: string;
  try {
    await validateProvisionedResource(type, resource);
    email = normalizeEmail(emailOf(resource as ProvisionedResource) ?? '');
    await assertEmailFree(deps, email);
    await assertPractitionersExist(deps, resource as ProvisionedResource);
  } catch (error) {
    await failed(error instanceof AppError ? error.code : 'unexpected');
    throw error;
  }

  let created: CreatedOnFhir;
  try {
    created = await createOnFhir(deps, resource as ProvisionedResource, email);
  } catch (error) {
    await failed(error instanceof AppError ? error.code : 'unexpected');
    throw error;
  }

  let userId: string;
  try {
    userId = await storeUserAndQueueMail(deps, type, created, email, audit);
  } catch (error) {
    const taken = isUniqueViolation(error);
    // the database may be what failed: recording the failure is best effort, the log line is the fallback
    await bestEffort(deps, () =>
      compensate(deps, created, audit, taken ? 'email_taken' : 'user_insert_failed', ctx.requestId),
    );
    await bestEffort(deps, () => failed(taken ? 'conflict' : 'user_insert_failed'));
    if (taken)
      throw new AppError('conflict', { detail: 'An account with this email already exists.', cause: error });
    throw new AppError('storage_unavailable', { cause: error });
  }
  deps.outbox.wake();
  return { userId, fhirId: created.id, resource: created.resource, versionId: created.versionId, email };
}
