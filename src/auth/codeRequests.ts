import type { Selectable } from 'kysely';
import type { CodeRequestsTable } from '../../db/schema.js';
import { AppError } from '../errors.js';
import type { AppDeps, RequestContext } from '../http/types.js';
import { uuidv7 } from '../ids.js';
import { isoAfter } from '../leases.js';
import { type Db, findUserByEmail } from '../users/userRepository.js';
import type { CodePurpose } from './accessCodes.js';
import { CODE_ELIGIBLE, issueCode } from './accountCodes.js';

/**
 * A "send me a code" request (resend a signup code, forgot password) is answered 202 before its
 * work runs, so that neither status nor timing says whether the account exists. The request is
 * recorded first, whatever the email, and the record is removed in the commit that queues the
 * code's mail (or once the account proves not eligible). A process killed after the 202, or a
 * try that failed (a lock held too long), leaves the record behind: its lease lapses and the
 * reconciler (provisioning/reconciliation.ts, every 10 s) fulfils it, so an accepted request's
 * mail is never lost.
 */

export type CodeRequest = Selectable<CodeRequestsTable>;

/** Long past a normal fulfilment (milliseconds): a retry never takes one that is still running. */
const LEASE_MS = 15_000;

/** Records the request before its 202: the same one insert for every email. */
export async function recordCodeRequest(
  deps: Pick<AppDeps, 'db' | 'clock'>,
  purpose: CodePurpose,
  email: string,
  ctx: RequestContext,
): Promise<CodeRequest> {
  const now = deps.clock.now();
  const request: CodeRequest = {
    id: uuidv7(now.getTime()),
    purpose,
    email,
    request_id: ctx.requestId,
    client_ip: ctx.clientIp,
    requested_at: now.toISOString(),
    lease_until: isoAfter(now, LEASE_MS),
  };
  await deps.db.insertInto('code_requests').values(request).execute();
  return request;
}

/** Mails a new code if the account is eligible, and closes the request in the same commit. */
export async function fulfilCodeRequest(deps: AppDeps, request: CodeRequest): Promise<void> {
  const purpose = request.purpose as CodePurpose;
  const close = (db: Db) => db.deleteFrom('code_requests').where('id', '=', request.id).execute();
  const user = await findUserByEmail(deps.db, request.email);
  if (!user || !CODE_ELIGIBLE[purpose]?.(user)) {
    await close(deps.db);
    return;
  }
  const action = purpose === 'signup' ? 'auth.access_code_resend' : 'auth.password_forgot';
  const audit = {
    action,
    actorUserId: user.id,
    actorRole: user.role,
    targetUserId: user.id,
    requestId: request.request_id,
    clientIp: request.client_ip,
  };
  try {
    await issueCode(deps, user, purpose, audit, close);
  } catch (error) {
    // the account changed meanwhile (registered, deactivated): nothing to mail any more
    if (!(error instanceof AppError && error.code === 'conflict')) throw error;
    await close(deps.db);
  }
}

/** Fulfils every request whose lease lapsed, each claimed first (another instance may be retrying too); returns how many. */
export async function fulfilLapsedCodeRequests(deps: AppDeps): Promise<number> {
  const now = deps.clock.now();
  const lapsed = await deps.db
    .selectFrom('code_requests')
    .selectAll()
    .where('lease_until', '<', now.toISOString())
    .orderBy('lease_until')
    .limit(100)
    .execute();
  let fulfilled = 0;
  for (const request of lapsed) {
    const { numUpdatedRows } = await deps.db
      .updateTable('code_requests')
      .set({ lease_until: isoAfter(now, LEASE_MS) })
      .where('id', '=', request.id)
      .where('lease_until', '=', request.lease_until)
      .executeTakeFirst();
    if (numUpdatedRows !== 1n) continue;
    try {
      await fulfilCodeRequest(deps, request);
      fulfilled++;
    } catch (error) {
      // its lease lapses again: the next round retries it
      deps.logger.warn(
        { code: error instanceof AppError ? error.code : 'unexpected' },
        'code request postponed',
      );
    }
  }
  if (fulfilled > 0) deps.logger.info({ fulfilled }, 'code requests fulfilled after their answer was sent');
  return fulfilled;
}
