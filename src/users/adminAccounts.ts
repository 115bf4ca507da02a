import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema.js';
import { writeAudit } from '../audit/auditService.js';
import { checkPassword } from '../auth/passwordPolicy.js';
import type { PasswordHasher } from '../auth/passwords.js';
import type { Clock } from '../clock.js';
import { isPlainAddress } from '../email/address.js';
import { uuidv7 } from '../ids.js';
import { findUserByEmail, insertUser, normalizeEmail } from './userRepository.js';

export interface AdminAccountDeps {
  readonly db: Kysely<Database>;
  readonly clock: Clock;
  /** Only hashing: the start hashes on its own thread before listening (hashBeforeServing). */
  readonly passwords: Pick<PasswordHasher, 'hash'>;
  readonly passwordMinLength: number;
  readonly appName: string;
}

export class AdminAccountError extends Error {}

/** The admin's email, normalized; refused unless it is one plain address (it is the login and the audit's name). */
export function adminEmailOf(input: string): string {
  const email = normalizeEmail(input);
  if (!isPlainAddress(email)) throw new AdminAccountError('The admin email must be a single email address.');
  return email;
}

/**
 * Creates an active admin account, unless one with that email already exists. Used at start
 * (ADMIN_EMAIL/ADMIN_PASSWORD) and by `npm run admin:create`; audited with its source.
 * No account exists until one of those two creates it: there is no default admin.
 */
export async function ensureAdminAccount(
  deps: AdminAccountDeps,
  input: { email: string; password: string; source: 'env' | 'cli' },
): Promise<'created' | 'exists'> {
  const email = adminEmailOf(input.email);
  if (await findUserByEmail(deps.db, email)) return 'exists';
  const refusal = checkPassword({ minLength: deps.passwordMinLength }, input.password, {
    email,
    appName: deps.appName,
  });
  if (refusal) throw new AdminAccountError(`The admin password ${refusal}.`);
  const now = deps.clock.now().toISOString();
  const id = uuidv7();
  await insertUser(deps.db, {
    id,
    email,
    role: 'admin',
    fhir_resource_id: null,
    access_code_hash: null,
    access_code_expires_at: null,
    is_registered: 1,
    password_hash: await deps.passwords.hash(input.password),
    created_by_admin: 0,
    created_at: now,
    updated_at: now,
    registered_at: now,
    last_login_at: null,
  });
  await writeAudit(deps.db, deps.clock, {
    action: 'admin.bootstrap',
    outcome: 'success',
    targetUserId: id,
    detail: { source: input.source },
  });
  return 'created';
}
