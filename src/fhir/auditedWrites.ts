import type { Resource } from '@medplum/fhirtypes';
import type { AuditEvent } from '../audit/auditService.js';
import { auditAndClose, openWrite } from '../audit/openWrites.js';
import { auditedError, WRITE_ACTIONS } from '../audit/requestAudit.js';
import { AppError } from '../errors.js';
import type { AppDeps, Caller, RequestContext } from '../http/types.js';
import { patientsIn } from './compartment.js';
import type { FhirResult, Written } from './fhirService.js';
import { writeMayHaveLanded } from './upstreamStatus.js';

/**
 * Every write through the scoped FHIR access (a practitioner's create and update, anything an
 * admin forwards) is audited: an open record first, so a process killed before the outcome is
 * known leaves it for the housekeeping sweep, then the outcome, also when the upstream refused
 * it. A write to a Patient may move it to another GP: the panel answers it may have changed are
 * forgotten before the write is answered.
 */

/** Who writes: the request's dependencies, verified caller and context. */
export interface Writer {
  readonly deps: AppDeps;
  readonly caller: Caller;
  readonly ctx: RequestContext;
}

/** What a write names: a type (none for a batch), an id, an operation. */
export interface WriteTarget {
  readonly type?: string;
  readonly id?: string;
  readonly operation?: string;
}

/** Runs a write, audits it (also when the upstream refused it), and forgets what it may have changed. */
export async function auditedWrite<R extends FhirResult>(
  writer: Writer,
  method: string,
  target: WriteTarget,
  write: () => Promise<R>,
): Promise<R> {
  const open = await openRecord(writer, method, target);
  let result: R;
  try {
    result = await write();
  } catch (error) {
    const appError = error instanceof AppError ? error : undefined;
    // a timeout, a lost connection or a 5xx after the request went out: the server may have
    // applied the write, so it is not recorded as one that failed, and what it may have moved is forgotten
    const mayHaveLanded = writeMayHaveLanded(error);
    if (mayHaveLanded) await forgetWhatMayHaveMoved(writer.deps, target, target.id);
    await auditOrLeaveToSweep(
      writer,
      open,
      writeEvent(
        writer,
        method,
        target,
        appError?.status ?? 500,
        appError?.code ?? 'internal_error',
        mayHaveLanded ? { applied: 'unknown' } : {},
      ),
    );
    throw error instanceof Error ? auditedError(error) : error;
  }
  const body = result.body as Resource | undefined;
  const createdId = body?.resourceType === target.type ? body?.id : undefined;
  const id = target.id ?? (result as Partial<Written<Resource>>).id ?? createdId;
  await forgetWhatMayHaveMoved(writer.deps, target, id);
  const event = writeEvent(writer, method, { ...target, ...(id ? { id } : {}) }, result.status);
  await auditOrLeaveToSweep(writer, open, {
    ...event,
    patientId: patientOfWritten(body, target, writer.deps.fhir.baseUrl),
  });
  return result;
}

/**
 * The patient whose data a write changed, read off the resource the server answered, so the
 * trail's `?patient=` lists writes too; none for a batch (its entries are recorded one by one),
 * an answer without the resource, or one that names several patients.
 */
function patientOfWritten(
  body: Resource | undefined,
  target: WriteTarget,
  upstreamBase: string,
): string | null {
  if (!body || !target.type || body.resourceType !== target.type) return null;
  const patients = patientsIn(body, upstreamBase);
  return patients.length === 1 ? (patients[0] ?? null) : null;
}

function writeAction(method: string, target: WriteTarget): string {
  if (target.operation) return 'fhir.operation';
  if (!target.type) return 'fhir.batch';
  return WRITE_ACTIONS[method] ?? 'fhir.write';
}

function writeEvent(
  { caller, ctx }: Writer,
  method: string,
  target: WriteTarget,
  status: number,
  errorCode?: string,
  extra: Record<string, string> = {},
): AuditEvent {
  return {
    action: writeAction(method, target),
    outcome: status < 400 ? 'success' : 'failed',
    ...(errorCode ? { errorCode } : {}),
    actorUserId: caller.userId,
    actorRole: caller.role,
    targetFhirType: target.type ?? null,
    targetFhirId: target.id ?? null,
    requestId: ctx.requestId,
    clientIp: ctx.clientIp,
    detail: { method, status, ...(target.operation ? { operation: target.operation } : {}), ...extra },
  };
}

/** Records the write before it is forwarded: a process killed before its outcome is audited leaves this for reconciliation. */
function openRecord({ deps, caller, ctx }: Writer, method: string, target: WriteTarget): Promise<string> {
  return openWrite(
    deps.db,
    deps.clock,
    {
      action: writeAction(method, target),
      method,
      operation: target.operation,
      targetFhirType: target.type ?? null,
      targetFhirId: target.id ?? null,
      actorUserId: caller.userId,
      actorRole: caller.role,
      requestId: ctx.requestId,
      clientIp: ctx.clientIp,
    },
    deps.config.fhir.timeoutMs,
  );
}

/**
 * Audits a write the server has answered. If the database fails now, the write is done all the
 * same: a 503 "try again" would have the client repeat it. Its open record stays, and the sweep
 * audits it (applied unknown).
 */
async function auditOrLeaveToSweep({ deps, ctx }: Writer, open: string, event: AuditEvent): Promise<void> {
  try {
    await auditAndClose(deps.db, deps.clock, open, event);
  } catch (error) {
    deps.logger.error(
      { err: error, req_id: ctx.requestId, action: event.action },
      'write audit not stored now: the housekeeping sweep records it',
    );
  }
}

/** A write to a Patient may have moved it to another GP: the old one must not keep reading and writing for PANEL_CACHE_TTL. */
async function forgetWhatMayHaveMoved(deps: AppDeps, target: WriteTarget, id: string | undefined) {
  if (target.type === 'Patient' && id && !target.operation) await deps.panels.forget(id);
  // a batch, a transaction, or a Patient write without one id (conditional, an operation) may have moved any patient
  else if (!target.type || target.type === 'Patient') await deps.panels.forgetAll();
}
