import type { Patient, Practitioner } from '@medplum/fhirtypes';
import type { Kysely, Transaction } from 'kysely';
import { isLockTimeout, withShortLockWait } from '../../db/connection.js';
import type { Database, IntentRow } from '../../db/schema.js';
import { type AuditEvent, writeAudit } from '../audit/auditService.js';
import { auditedError, refusalOutcome } from '../audit/requestAudit.js';
import { generateAccessCode, hashAccessCode } from '../auth/accessCodes.js';
import { enqueueAccessCodeMail } from '../email/outbox.js';
import { AppError } from '../errors.js';
import { currentOrNone } from '../fhir/fhirService.js';
import {
  asBuiltByGateway,
  asServerFailure,
  unexpectedUpstreamBody,
  writeMayHaveLanded,
} from '../fhir/upstreamStatus.js';
import { FHIR_ID_PATTERN } from '../http/schemas.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import { uuidv7 } from '../ids.js';
import { heartbeat, isoAfter, LEASE_MS } from '../leases.js';
import {
  accountIdentifierSystem,
  isAccountIdentifierSystem,
  ROLE_BY_FHIR_TYPE,
} from '../users/fhirIdentity.js';
import {
  type Db,
  findUserByEmail,
  findUserByFhirResource,
  insertPendingAccount,
  isUniqueViolation,
  normalizeEmail,
} from '../users/userRepository.js';
import { displayName, emailOf } from './fhirMappers.js';
import { type ProvisionedType, validateProvisionedResource } from './fhirValidation.js';
import {
  canonicalJson,
  finishKey,
  type HeldKey,
  keyOfIntent,
  releaseKey,
  type StoredResponse,
} from './idempotency.js';
import {
  anotherOpenIntent,
  findIntentAfterWriters,
  type IntentClaim,
  insertIntent,
  renewIntent,
  settleIntent,
} from './intents.js';
import { insertOrphan, resolveOrphan } from './orphans.js';

/**
 * The flow that replaces "create Patient and User in one call" (DESIGN.md section 2):
 * validate -> email free? -> record the intent -> conditional create on the FHIR server -> one
 * transaction: inactive user + access-code mail in the outbox + audit + intent done + the
 * idempotency key's answer -> wake the outbox. The intent, written before the FHIR call, is
 * what makes a crash at any point recoverable (reconciliation.ts finishes or undoes it). A
 * failure after the FHIR create deletes the resource again, or records it as an orphan: never
 * a silent one.
 */

export type ProvisionedResource = Patient | Practitioner;

/** How the answer is shaped: the slim DTO, or a FHIR server's answer (the resource, Location). */
export type ResponseKind = 'slim' | 'fhir';

export interface ProvisionRequest {
  readonly type: ProvisionedType;
  /** The resource, built from a DTO or sent raw; validated here. */
  readonly resource: unknown;
  readonly responseKind: ResponseKind;
  /** The Idempotency-Key this request holds, if it sent one. */
  readonly held: HeldKey | undefined;
}

/** What a finished create is: enough to build either answer. */
interface Provisioned {
  readonly type: ProvisionedType;
  readonly userId: string;
  readonly fhirId: string;
  readonly resource: ProvisionedResource;
  readonly versionId: string | undefined;
  readonly email: string;
}

/**
 * The account identifier system a create actually sent, read off the resource it stored (an
 * intent's), else the one of today's PUBLIC_BASE_URL: a restart with another PUBLIC_BASE_URL must
 * still find what an interrupted create left, or that resource is lost and a retry duplicates it.
 */
export function sentAccountIdentifierSystem(
  sent: ProvisionedResource,
  email: string,
  publicBaseUrl: string,
): string {
  // the last: withAccountIdentifier appends ours after what the admin sent, which may carry another
  // deployment's account identifier (a record copied from staging), never searched for here
  const ours = sent.identifier?.findLast((i) => i.value === email && isAccountIdentifierSystem(i.system));
  return ours?.system ?? accountIdentifierSystem(publicBaseUrl);
}

/** `identifier=system|email`, the search that finds the resource of an account. */
export function accountIdentifierQuery(publicBaseUrl: string, email: string): string {
  return `${accountIdentifierSystem(publicBaseUrl)}|${email}`;
}

function withAccountIdentifier(
  resource: ProvisionedResource,
  system: string,
  email: string,
): ProvisionedResource {
  const others = (resource.identifier ?? []).filter((i) => i.system !== system);
  return { ...resource, identifier: [...others, { system, value: email }] } as ProvisionedResource;
}

/** The answer of a finished create, as the first request gave it and as every replay gives it again. */
export function provisionedResponse(deps: AppDeps, kind: ResponseKind, done: Provisioned): StoredResponse {
  if (kind === 'slim') {
    return {
      status: 201,
      headers: {},
      body: {
        fhir_id: done.fhirId,
        user_id: done.userId,
        message: `${done.type} created. An access code was emailed to ${done.email}.`,
      },
    };
  }
  const version = done.versionId ? `/_history/${done.versionId}` : '';
  return {
    status: 201,
    body: done.resource,
    headers: {
      Location: `${deps.config.publicBaseUrl}/fhir/${done.type}/${done.fhirId}${version}`,
      ...(done.versionId ? { ETag: `W/"${done.versionId}"` } : {}),
    },
  };
}

type AuditFields = Omit<AuditEvent, 'actorUserId' | 'actorRole' | 'requestId' | 'clientIp'>;
/** Writes an audit entry for this request; pass a transaction to commit it with the change. */
type Audit = (event: AuditFields, db?: Db) => Promise<void>;

function auditor(deps: AppDeps, actor: { userId: string; role: string }, ctx: RequestContext): Audit {
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
async function assertPractitionersExist(
  deps: AppDeps,
  resource: ProvisionedResource,
  kind: ResponseKind,
): Promise<void> {
  if (resource.resourceType !== 'Patient') return;
  // named as the caller sent it: the slim field, or the element of a raw FHIR create
  const path = kind === 'slim' ? 'general_practitioner_id' : 'generalPractitioner';
  const invalid = () =>
    new AppError('validation_failed', {
      errors: [{ path, message: 'must be the id of an existing Practitioner' }],
    });
  for (const ref of resource.generalPractitioner ?? []) {
    const id = /^Practitioner\/(.+)$/.exec(ref.reference ?? '')?.[1];
    // a missing Practitioner is the admin's mistake; an upstream failure stays a 502/504, and so
    // does a refusal (400, 405) of the read the gateway built from a checked id
    if (
      !id ||
      !FHIR_ID_PATTERN.test(id) ||
      (await asBuiltByGateway(currentOrNone(deps.fhir, 'Practitioner', id))) === undefined
    )
      throw invalid();
  }
}

export interface CreatedOnFhir {
  readonly resource: ProvisionedResource;
  readonly id: string;
  readonly versionId: string | undefined;
  /** false when the conditional create found the resource of an earlier attempt. */
  readonly createdNow: boolean;
}

// set by the FHIR server, not by a create: never compared (of `meta`, only what the server sets)
const SERVER_ELEMENTS: ReadonlySet<string> = new Set(['id', 'text']);
const SERVER_META: ReadonlySet<string> = new Set(['versionId', 'lastUpdated', 'source']);

/** An element as a create says it: `meta` without what the server sets, `identifier` without the account's. */
function asCreated(resource: Record<string, unknown>, element: string, accountSystem: string): unknown {
  const value = resource[element];
  if (element === 'meta' && value !== null && typeof value === 'object') {
    const kept = Object.entries(value).filter(([key]) => !SERVER_META.has(key));
    return kept.length > 0 ? Object.fromEntries(kept) : undefined;
  }
  if (element === 'identifier' && Array.isArray(value)) {
    const kept = value.filter((i: { system?: unknown } | null) => i?.system !== accountSystem);
    return kept.length > 0 ? kept : undefined;
  }
  return value;
}

/**
 * The record a conditional create found (200) instead of making one: an earlier attempt's, linked
 * now. Security: it must carry this email's account identifier — a server that matches the
 * condition loosely (or ignores it) answered another person's record, and linking it gave the new
 * account their data (502, the intent left to reconciliation). And it must say what this create
 * says: a retry with a corrected body (another general practitioner) linked the first attempt's
 * record and answered 201, the correction silently dropped (409, naming what differs).
 */
function assertFoundIsThisCreate(
  deps: AppDeps,
  sent: ProvisionedResource,
  found: ProvisionedResource | undefined,
  email: string,
  kind: ResponseKind,
): void {
  const system = accountIdentifierSystem(deps.config.publicBaseUrl);
  const identifiers: unknown = found?.identifier;
  const carries =
    Array.isArray(identifiers) &&
    identifiers.some(
      (i: { system?: unknown; value?: unknown } | null) => i?.system === system && i?.value === email,
    );
  if (found?.resourceType !== sent.resourceType || !carries)
    throw unexpectedUpstreamBody("a conditional create with a record that is not the account's");
  const sentElements: Record<string, unknown> = { ...sent };
  const foundElements: Record<string, unknown> = { ...found };
  const same = (element: string) => {
    try {
      return (
        canonicalJson(asCreated(sentElements, element, system)) ===
        canonicalJson(asCreated(foundElements, element, system))
      );
    } catch {
      throw unexpectedUpstreamBody('a record nested too deep to compare'); // a stack overflow, never a 500
    }
  };
  const differing = [...new Set([...Object.keys(sentElements), ...Object.keys(foundElements)])].filter(
    (element) => !SERVER_ELEMENTS.has(element) && !same(element),
  );
  if (differing.length === 0) return;
  const named = differing.map((e) => (kind === 'slim' ? (SLIM_FIELD_OF[e] ?? e) : e));
  // no upstream refusal in its cause: createOnFhir's asServerFailure leaves it the admin's 409
  throw new AppError('conflict', {
    detail: `An earlier create for this email made ${sent.resourceType}/${found.id} with other details (${named.join(', ')}) and no account: it was not changed. Create again with its details to finish that account, or change the record through /fhir first.`,
  });
}

/** The slim create's field an element comes from, to name it as the admin sent it. */
const SLIM_FIELD_OF: Readonly<Record<string, string>> = {
  generalPractitioner: 'general_practitioner_id',
  birthDate: 'dob',
  telecom: 'email, phone',
};

async function createOnFhir(
  deps: AppDeps,
  resource: ProvisionedResource,
  email: string,
  kind: ResponseKind,
): Promise<CreatedOnFhir> {
  try {
    const written = await deps.fhir.create(resource.resourceType, resource, {
      ifNoneExist: `identifier=${encodeURIComponent(accountIdentifierQuery(deps.config.publicBaseUrl, email))}`,
    });
    if (written.status === 201)
      return {
        resource: written.body ?? ({ ...resource, id: written.id } as ProvisionedResource),
        id: written.id,
        versionId: written.versionId,
        createdNow: true,
      };
    const found = (written.body ?? (await deps.fhir.read(resource.resourceType, written.id)).body) as
      | ProvisionedResource
      | undefined;
    assertFoundIsThisCreate(deps, resource, found, email, kind);
    return {
      resource: found as ProvisionedResource,
      id: written.id,
      versionId: written.versionId,
      createdNow: false,
    };
  } catch (error) {
    // 412 on a conditional create: several resources already carry this identifier (FHIR http.html#ccreate)
    if (error instanceof AppError && error.code === 'precondition_failed')
      throw new AppError('duplicate_identifier', { cause: error });
    // a slim create's resource is the gateway's, built from checked fields: what the server refuses
    // of it the admin cannot mend (as with the slim reads); a raw create's is the admin's own
    throw kind === 'slim' ? asServerFailure(error) : error;
  }
}

/** Records a FHIR resource no account will ever use, for an operator (GET /admin/provisioning/orphans). */
export async function recordOrphan(
  deps: AppDeps,
  type: string,
  fhirId: string,
  reason: string,
  requestId: string | null,
  db: Kysely<Database> | Transaction<Database> = deps.db,
) {
  await insertOrphan(db, {
    id: uuidv7(),
    fhirType: type,
    fhirId,
    reason,
    requestId,
    createdAt: deps.clock.now().toISOString(),
  });
}

/** Undo of a FHIR create; when even that fails the resource is recorded for an operator. */
export async function removeFromFhir(
  deps: AppDeps,
  type: string,
  fhirId: string,
  audit: Audit,
  reason: string,
  requestId: string | null,
): Promise<'removed' | 'orphaned'> {
  try {
    await deps.fhir.delete(type, fhirId);
    await audit({
      action: 'provisioning.compensate',
      outcome: 'success',
      targetFhirType: type,
      targetFhirId: fhirId,
      detail: { reason },
    });
    return 'removed';
  } catch (error) {
    deps.logger.error(
      { err: error, fhir_type: type, fhir_id: fhirId, req_id: requestId },
      'provisioning left an orphan',
    );
    await recordOrphan(deps, type, fhirId, reason, requestId);
    await audit({
      action: 'provisioning.orphan',
      outcome: 'failed',
      targetFhirType: type,
      targetFhirId: fhirId,
      detail: { reason },
    });
    return 'orphaned';
  }
}

/** The lease of an intent was taken over by reconciliation: the work must not commit (its transaction rolls back). */
class LeaseLost extends Error {}

/** The account's transaction failed in a way that may hide a commit, and the database could not be asked. */
class CommitUnknown extends Error {}

/**
 * Whether a failed transaction may still have committed: a refusal the database gave (a unique
 * violation, a lock timeout) or our own rollback says no; anything else (a connection lost after
 * COMMIT went out) may hide one.
 */
function mayHaveCommitted(error: unknown): boolean {
  return !(error instanceof LeaseLost || isUniqueViolation(error) || isLockTimeout(error));
}

/** Runs the account's transaction; a failure that may hide a commit counts only once the database says none happened. */
async function commitOrConfirm(
  deps: AppDeps,
  claim: IntentClaim,
  userId: string,
  transaction: () => Promise<void>,
): Promise<void> {
  try {
    await transaction();
  } catch (error) {
    // a connection lost once COMMIT went out may hide a commit: ask before anyone undoes the FHIR create
    if (!mayHaveCommitted(error) || !(await committedAnyway(deps, claim, userId))) throw error;
  }
}

/**
 * Whether the account's transaction committed after all: its intent is done with this user.
 * Still pending under our claim: it did not. Settled by someone else (reconciliation took the
 * lease and finished it): LeaseLost, so nothing of theirs is undone. No answer: CommitUnknown.
 */
async function committedAnyway(deps: AppDeps, claim: IntentClaim, userId: string): Promise<boolean> {
  let intent: IntentRow | undefined;
  try {
    intent = await findIntentAfterWriters(deps.db, claim.id, deps.dialect);
  } catch (error) {
    throw new CommitUnknown('the database could not say whether the account was stored', { cause: error });
  }
  if (intent?.state === 'done' && intent.user_id === userId) return true;
  if (intent?.state === 'pending' && intent.attempts === claim.attempts) return false;
  throw new LeaseLost('the provisioning intent was settled by another holder');
}

/** What completing an account needs from the intent (a live request's or a reconciled one's). */
export type IntentForCompletion = Pick<
  IntentRow,
  'id' | 'fhir_type' | 'email' | 'display_name' | 'response_kind' | 'actor_user_id' | 'idempotency_key'
>;

/**
 * The one transaction that makes an account: inactive user with a fresh code, its mail in the
 * outbox, the audit entry, the intent done and the idempotency key's answer — all or nothing,
 * and only while `claim` still holds the intent.
 */
export async function completeAccount(
  deps: AppDeps,
  intent: IntentForCompletion,
  claim: IntentClaim,
  created: CreatedOnFhir,
  audit: Audit,
  detail: Record<string, string | boolean> = {},
): Promise<StoredResponse> {
  const now = deps.clock.now();
  const userId = uuidv7(now.getTime());
  const type = intent.fhir_type;
  const response = provisionedResponse(deps, intent.response_kind, {
    type,
    userId,
    fhirId: created.id,
    resource: created.resource,
    versionId: created.versionId,
    email: intent.email,
  });
  await commitOrConfirm(deps, claim, userId, () =>
    deps.db.transaction().execute(async (trx) => {
      await storePendingAccount(deps, trx, intent, { userId, fhirId: created.id, now });
      await audit(
        {
          action: 'provisioning.create',
          outcome: 'success',
          targetUserId: userId,
          targetFhirType: type,
          targetFhirId: created.id,
          // a new patient's trail (GET /admin/audit?patient=) begins with their provisioning
          ...(type === 'Patient' ? { patientId: created.id } : {}),
          ...(Object.keys(detail).length ? { detail } : {}),
        },
        trx,
      );
      const settled = await settleIntent(trx, claim, 'done', {
        fhir_id: created.id,
        user_id: userId,
        updated_at: now.toISOString(),
      });
      if (!settled) throw new LeaseLost('the provisioning intent was taken over');
      const held = keyOfIntent(intent);
      if (held) await finishKey(trx, held, response);
      // a resource listed as an orphan (a create that landed late) is one no longer: an account uses it
      await resolveOrphan(trx, type, created.id, now.toISOString());
    }),
  );
  deps.outbox.wake();
  return response;
}

/** The inactive account, linked to its FHIR record, and the mail with its access code. */
async function storePendingAccount(
  deps: AppDeps,
  trx: Db,
  intent: IntentForCompletion,
  account: { userId: string; fhirId: string; now: Date },
): Promise<void> {
  const code = generateAccessCode();
  const expiresAt = isoAfter(account.now, deps.config.accessCodeTtlSeconds * 1000);
  const role = ROLE_BY_FHIR_TYPE[intent.fhir_type];
  await insertPendingAccount(trx, {
    id: account.userId,
    email: intent.email,
    role,
    fhirId: account.fhirId,
    codeHash: hashAccessCode(deps.secrets.codeHmacKey, 'signup', intent.email, code),
    codeExpiresAt: expiresAt,
    displayName: intent.display_name,
    at: account.now.toISOString(),
  });
  await enqueueAccessCodeMail(trx, deps.clock, deps.secrets.sealingKey, {
    template: 'access_code',
    to: intent.email,
    name: intent.display_name,
    role,
    purpose: 'signup',
    code,
    expiresAt,
  });
}

/** A database that is locked answers 503 at once; the failure path then writes nothing more (it would wait again). */
const isStorageBusy = isLockTimeout;

async function bestEffort(deps: AppDeps, step: () => Promise<unknown>): Promise<void> {
  try {
    await step();
  } catch (error) {
    deps.logger.error({ err: error }, 'could not record a provisioning failure');
  }
}

/** A create checked and ready to send: its account's email (free) and the resource carrying our identifier. */
interface PreparedCreate {
  readonly email: string;
  readonly resource: ProvisionedResource;
}

async function preparedCreate(deps: AppDeps, request: ProvisionRequest): Promise<PreparedCreate> {
  await validateProvisionedResource(request.type, request.resource);
  const sent = request.resource as ProvisionedResource;
  const email = normalizeEmail(emailOf(sent) ?? '');
  await assertEmailFree(deps, email);
  await assertPractitionersExist(deps, sent, request.responseKind);
  const resource = withAccountIdentifier(sent, accountIdentifierSystem(deps.config.publicBaseUrl), email);
  return { email, resource };
}

/** The intent of a create, held by its request for a lease; it stores what reconciliation needs to finish it. */
function newIntent(
  now: Date,
  actor: Caller,
  ctx: RequestContext,
  request: ProvisionRequest,
  { email, resource }: PreparedCreate,
): IntentForCompletion & IntentRow {
  return {
    id: uuidv7(now.getTime()),
    actor_user_id: actor.userId,
    idempotency_key: request.held?.key ?? null,
    fhir_type: request.type,
    email,
    display_name: displayName(resource),
    resource: JSON.stringify(resource),
    response_kind: request.responseKind,
    state: 'pending',
    fhir_id: null,
    user_id: null,
    lease_until: isoAfter(now, LEASE_MS),
    attempts: 1,
    last_error: null,
    request_id: ctx.requestId,
    client_ip: ctx.clientIp,
    created_at: now.toISOString(),
    updated_at: now.toISOString(),
  };
}

/** Stores the intent, claimed by this request; a locked database answers 503 at once. */
async function claimNewIntent(deps: AppDeps, intent: IntentRow): Promise<IntentClaim> {
  try {
    const { state: _s, fhir_id: _f, user_id: _u, attempts: _a, last_error: _l, ...fields } = intent;
    return await insertIntent(deps.db, fields);
  } catch (error) {
    if (isStorageBusy(error)) throw new AppError('storage_unavailable', { cause: error });
    throw error;
  }
}

/** Provisions a Patient or Practitioner resource (already built from a DTO or sent raw). */
export async function provision(
  deps: AppDeps,
  actor: Caller,
  ctx: RequestContext,
  request: ProvisionRequest,
): Promise<StoredResponse> {
  const { type } = request;
  const audit = auditor(deps, actor, ctx);
  const failed = (reason: string, errorCode = reason, outcome: 'failed' | 'denied' = 'failed') =>
    audit({
      action: 'provisioning.create',
      outcome,
      targetFhirType: type,
      errorCode,
      detail: { reason },
    });
  let prepared: PreparedCreate;
  try {
    prepared = await preparedCreate(deps, request);
  } catch (error) {
    // refused before anything was created (an email taken, a profile or a practitioner wrong) is a refusal, `denied`
    const code = error instanceof AppError ? error.code : 'internal_error';
    await failed(code, code, error instanceof AppError ? refusalOutcome(error) : 'failed');
    throw auditedError(error as Error);
  }
  // the intent comes first: from here on a crash leaves a row that reconciliation finishes or undoes
  const intent = newIntent(deps.clock.now(), actor, ctx, request, prepared);
  const claim = await claimNewIntent(deps, intent);
  // a renewal stuck behind a table lock held the answer (beat.stop waits for it) a lock wait longer;
  // one that cannot renew now is retried at the next beat, well inside the lease
  const beat = heartbeat(
    () =>
      withShortLockWait(deps.backgroundDb, deps.dialect, MOOT_LOCK_WAIT_MS, (db) =>
        renewIntent(db, claim, isoAfter(deps.clock.now(), LEASE_MS)),
      ),
    deps.logger,
  );
  try {
    return await createAndComplete(
      { deps, intent, claim, audit, failed, ctx, kind: request.responseKind },
      prepared.resource,
    );
  } finally {
    await beat.stop();
  }
}

/** How long work a table lock makes moot waits for it (PostgreSQL): a renewal, a question the lock answers. */
const MOOT_LOCK_WAIT_MS = 200;

/** A create past its intent: what finishing or undoing it needs. */
interface CreateInFlight {
  readonly deps: AppDeps;
  readonly intent: IntentForCompletion;
  readonly claim: IntentClaim;
  readonly audit: Audit;
  readonly failed: (reason: string, errorCode?: string, outcome?: 'failed' | 'denied') => Promise<void>;
  readonly ctx: RequestContext;
  readonly kind: ResponseKind;
}

async function createAndComplete(
  flight: CreateInFlight,
  resource: ProvisionedResource,
): Promise<StoredResponse> {
  const { deps, intent, claim, audit } = flight;
  let created: CreatedOnFhir;
  try {
    created = await createOnFhir(deps, resource, intent.email, flight.kind);
  } catch (error) {
    throw await fhirCreateFailed(flight, error as Error);
  }
  try {
    return await completeAccount(deps, intent, claim, created, audit);
  } catch (error) {
    if (error instanceof LeaseLost) {
      // reconciliation holds the intent now and finishes it; a retry with the same key gets its answer
      throw new AppError('conflict', {
        detail: 'The request took too long and is being finished; retry with the same Idempotency-Key.',
        headers: { 'Retry-After': '2' },
        cause: error,
      });
    }
    throw await accountFailed(flight, created, error as Error);
  }
}

function settleAs(flight: CreateInFlight, state: 'abandoned' | 'orphaned', reason: string) {
  const { deps, claim } = flight;
  return settleIntent(deps.db, claim, state, {
    last_error: reason,
    updated_at: deps.clock.now().toISOString(),
  });
}

/** The FHIR create failed: the intent and its key are let go unless the create may have landed. */
async function fhirCreateFailed(flight: CreateInFlight, error: Error): Promise<Error> {
  const { deps, intent } = flight;
  const reason = error instanceof AppError ? error.code : 'internal_error';
  const held = keyOfIntent(intent);
  // an answer we never got or could not read may hide a create: the intent stays for reconciliation
  // to look, and the key with it, so a retry gets what reconciliation finds
  if (!writeMayHaveLanded(error)) {
    await bestEffort(deps, () => settleAs(flight, 'abandoned', reason));
    if (held) await bestEffort(deps, () => releaseKey(deps.db, held, intent.id));
  }
  await bestEffort(deps, () => flight.failed(reason));
  return auditedError(error);
}

/** Why the account's transaction failed, as the failure path needs to know it. */
interface AccountFailure {
  readonly reason: 'email_taken' | 'storage_busy' | 'commit_unknown' | 'user_insert_failed';
  /** A racing create of the same email committed first. */
  readonly taken: boolean;
  /** The database is locked: nothing more is written (it would wait again). */
  readonly busy: boolean;
  /** The transaction may have committed and the database could not say. */
  readonly unknown: boolean;
}

function accountFailureOf(error: Error): AccountFailure {
  const taken = isUniqueViolation(error);
  const busy = isStorageBusy(error);
  const unknown = error instanceof CommitUnknown;
  const reason = taken
    ? 'email_taken'
    : busy
      ? 'storage_busy'
      : unknown
        ? 'commit_unknown'
        : 'user_insert_failed';
  return { reason, taken, busy, unknown };
}

/**
 * The account's transaction failed after the FHIR create: undo the create unless an account may
 * link to it, settle the intent and its key unless reconciliation must, audit, and answer why.
 */
async function accountFailed(flight: CreateInFlight, created: CreatedOnFhir, error: Error): Promise<Error> {
  const { deps, intent } = flight;
  const failure = accountFailureOf(error);
  // an account may link to the resource: a racing create's (taken) or our own, if the commit landed (unknown)
  // asked before every delete (the error may hide who won: a rollback's error replaces the first
  // one). A lock wait is asked only whether another create of this email is open: on PostgreSQL
  // the lock may be its user row, not yet committed, linking the very record ours found
  const linked = failure.unknown
    ? 'unknown'
    : !created.createdNow
      ? 'no'
      : failure.busy
        ? await racedWhileLocked(deps, intent)
        : await linkedToAnAccount(deps, intent, created.id);
  // another account links the id of the record we just made: the FHIR server handed out an id
  // again (ids reused after its reset, or a restore from an older backup). The record is ours
  // (created now, under our identifier) and is removed; the other account is an operator's to mend
  const reused = linked === 'another';
  const reason = reused ? 'fhir_id_reused' : failure.reason;
  if (reused)
    deps.logger.error(
      { fhir_type: intent.fhir_type, fhir_id: created.id, req_id: flight.ctx.requestId },
      'the FHIR server gave a new record the id another account links to: were its ids reused?',
    );
  // busy, or the link unknown: the intent stays pending and its key locked until the lease lapses;
  // reconciliation settles both (it too keeps a resource an account links to)
  const leftPending = failure.busy || linked === 'unknown';
  let orphaned = false;
  if (created.createdNow && (linked === 'no' || reused))
    orphaned = await undoFhirCreate(flight, created, failure.busy, reason);
  else if (!leftPending) await bestEffort(deps, () => settleAs(flight, 'abandoned', reason));
  // a database that is locked, or could not say whether it stored the account, would only make
  // the answer wait once more: the refusal is then recorded by the request's audit trail, which
  // keeps its rows until the database answers
  const auditHere = !failure.busy && !failure.unknown;
  // an account of this email links the resource: its create won, whatever error ours ended with
  const conflict = !reused && (failure.taken || linked === 'ours');
  const errorCode = conflict ? 'conflict' : reused ? 'upstream_error' : 'storage_unavailable';
  if (auditHere) await bestEffort(deps, () => flight.failed(conflict ? 'conflict' : reason, errorCode));
  const held = keyOfIntent(intent);
  if (held && !leftPending) await bestEffort(deps, () => releaseKey(deps.db, held, intent.id));
  // the record stays: it could not be removed, or a racing create of this email may link it
  const stays = orphaned || (failure.busy && linked === 'unknown');
  const refusal = reused ? reusedIdRefusal(error, orphaned) : accountRefusal(error, failure, conflict, stays);
  return auditHere ? auditedError(refusal) : refusal;
}

/** Deletes the resource this request created; true when even that failed and it is listed as an orphan. */
async function undoFhirCreate(
  flight: CreateInFlight,
  created: CreatedOnFhir,
  busy: boolean,
  reason: string,
): Promise<boolean> {
  const { deps, intent, ctx } = flight;
  // the database may be what failed: recording is best effort, the log line is the fallback
  const outcome = await removeFromFhir(
    deps,
    intent.fhir_type,
    created.id,
    busy ? noAudit(deps) : flight.audit,
    reason,
    ctx.requestId,
  ).catch(() => 'orphaned' as const);
  if (!busy)
    await bestEffort(deps, () => settleAs(flight, outcome === 'removed' ? 'abandoned' : 'orphaned', reason));
  return outcome === 'orphaned';
}

function accountRefusal(
  error: Error,
  failure: AccountFailure,
  conflict: boolean,
  orphaned: boolean,
): AppError {
  if (conflict)
    return new AppError('conflict', { detail: 'An account with this email already exists.', cause: error });
  return new AppError('storage_unavailable', {
    cause: error,
    headers: { 'Retry-After': '2' },
    detail: failure.unknown
      ? COMMIT_UNKNOWN_DETAIL
      : !orphaned
        ? 'The account could not be stored; nothing was created. Try again.'
        : // busy: the intent stays pending, and reconciliation links an account to the record that stayed
          failure.busy
          ? 'The database was busy while the account was being stored, and the FHIR record made for it was kept: the account is finished from it in the background. Look the email up before creating it again.'
          : 'The account could not be stored, and the FHIR record made for it could not be removed: it is listed for an administrator. Try again.',
  });
}

function reusedIdRefusal(error: Error, orphaned: boolean): AppError {
  return new AppError('upstream_error', {
    cause: error,
    detail: `The FHIR server gave the new record the id of a record another account links to (were its ids reused after a reset or a restore?). ${
      orphaned
        ? 'The new record could not be removed: it is listed for an administrator.'
        : 'The new record was removed and nothing was stored.'
    } An administrator should check the FHIR server before trying again.`,
  });
}

const COMMIT_UNKNOWN_DETAIL =
  'The database stopped answering while the account was being stored: it is finished or undone in the background. Retry with the same Idempotency-Key, or look the email up before creating it again.';

/**
 * Which account links to the resource this request's conditional create made. A concurrent
 * create of the same email without an Idempotency-Key finds that resource through its own
 * conditional create, and may link its account to it and commit first: this request then loses
 * on the unique index, and deleting "its" resource would leave the winner's account pointing at
 * nothing (`ours`: an account of this email). An account of another email means the FHIR server
 * handed out the id of a record it lost (`another`). Asked after the failed transaction rolled
 * back (PostgreSQL refuses every statement in an aborted one); a unique violation is only
 * reported once the other row is committed, so the row is visible here on both databases.
 */
async function linkedToAnAccount(
  deps: AppDeps,
  intent: IntentForCompletion,
  fhirId: string,
): Promise<'ours' | 'another' | 'no' | 'unknown'> {
  try {
    const linked = await findUserByFhirResource(deps.db, ROLE_BY_FHIR_TYPE[intent.fhir_type], fhirId);
    return !linked ? 'no' : linked.email === intent.email ? 'ours' : 'another';
  } catch (error) {
    // when the database cannot say, the resource is kept: a wrong delete loses an account's record
    deps.logger.error(
      { err: error, fhir_id: fhirId },
      'could not tell whether an account links to a resource',
    );
    return 'unknown';
  }
}

/**
 * 'unknown' when another create of the same email is open, so the resource is left to
 * reconciliation (which keeps a record an account links to) rather than deleted under it; else
 * 'no'. The question reads committed rows, which a row lock does not hold up; a lock on the whole
 * table (a migration, an operator's) answers it by itself: no create of the email can have got past
 * that lock either, so it is waited on for MOOT_LOCK_WAIT_MS only, and then the record is removed.
 */
async function racedWhileLocked(deps: AppDeps, intent: IntentForCompletion): Promise<'unknown' | 'no'> {
  try {
    const open = await withShortLockWait(deps.db, deps.dialect, MOOT_LOCK_WAIT_MS, (db) =>
      anotherOpenIntent(db, intent.email, intent.id),
    );
    return open ? 'unknown' : 'no';
  } catch (error) {
    deps.logger.warn({ err: error }, 'could not tell whether another create of the email is open');
    return 'no';
  }
}

/** While the database is locked, audit entries would wait for it too: the log line is the record. */
function noAudit(deps: AppDeps): Audit {
  return async (event) => {
    deps.logger.warn(
      {
        action: event.action,
        outcome: event.outcome,
        fhir_type: event.targetFhirType,
        fhir_id: event.targetFhirId,
      },
      'audit entry not stored: database busy',
    );
  };
}
