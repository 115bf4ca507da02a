import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';

/**
 * Table types for Kysely. Booleans are stored as 0/1 integers and timestamps as ISO-8601 UTC
 * strings on both SQLite and PostgreSQL, so one code path serves both dialects.
 */

export type Role = 'admin' | 'patient' | 'practitioner';
export type Flag = 0 | 1;

export interface UsersTable {
  id: string;
  email: string;
  role: Role;
  fhir_resource_id: string | null;
  access_code_hash: string | null;
  access_code_expires_at: string | null;
  access_code_attempts: Generated<number>;
  is_registered: Flag;
  password_hash: string | null;
  created_by_admin: Flag;
  is_active: Generated<Flag>;
  token_version: Generated<number>;
  profile: Generated<string>;
  created_at: string;
  updated_at: string;
  registered_at: string | null;
  last_login_at: string | null;
  reset_code_hash: ColumnType<string | null, string | null | undefined, string | null>;
  reset_code_expires_at: ColumnType<string | null, string | null | undefined, string | null>;
  reset_code_attempts: Generated<number>;
  /** The name the code mails greet with: a mail never waits for the FHIR server. */
  display_name: ColumnType<string | null, string | null | undefined, string | null>;
}

export type AuditOutcome = 'success' | 'denied' | 'failed';

export interface AuditLogTable {
  id: string;
  occurred_at: string;
  actor_user_id: string | null;
  actor_role: string | null;
  action: string;
  outcome: AuditOutcome;
  target_user_id: string | null;
  target_fhir_type: string | null;
  target_fhir_id: string | null;
  request_id: string | null;
  client_ip: string | null;
  detail: ColumnType<string | null, string | null | undefined, never>;
  /** The patient whose data the event concerns (access events, and actions on a Patient). */
  patient_id: ColumnType<string | null, string | null | undefined, never>;
  /** The error code of a refused or failed request (src/errors.ts). */
  error_code: ColumnType<string | null, string | null | undefined, never>;
}

/** The outbox's lanes; a statement over every lane names them all, so it can seek in outbox_lane_due. */
export const OUTBOX_KINDS = ['email', 'fhir_audit_event'] as const;
export type OutboxKind = (typeof OUTBOX_KINDS)[number];
export type OutboxStatus = 'pending' | 'sending' | 'sent' | 'failed';

/** Work that must happen after a commit and must not be lost: mail, AuditEvent mirroring. */
export interface OutboxTable {
  id: string;
  kind: OutboxKind;
  /** JSON; secret fields inside are sealed (AES-256-GCM with a key outside the database). */
  payload: string;
  status: Generated<OutboxStatus>;
  attempts: Generated<number>;
  next_attempt_at: string;
  /** A worker's lease: another worker may take the row over once it passes. */
  locked_until: string | null;
  /** Short, secret-free reason of the last failure. */
  last_error: string | null;
  created_at: string;
  sent_at: string | null;
}

export interface IdempotencyKeysTable {
  actor_user_id: string;
  key: string;
  route: string;
  request_hash: string;
  state: 'in_progress' | 'done';
  response_status: number | null;
  response_body: string | null;
  response_headers: string | null;
  created_at: string;
  expires_at: string;
  /** While in progress: the request holds the key until then (renewed while it runs). */
  locked_until: ColumnType<string | null, string | null | undefined, string | null>;
  /** The provisioning intent a crashed request left: reconciliation finishes the key with it. */
  intent_id: ColumnType<string | null, string | null | undefined, string | null>;
}

export type IntentState = 'pending' | 'done' | 'abandoned' | 'orphaned';

/** A provisioning create, recorded before the FHIR call (see migration 0004). */
export interface ProvisioningIntentsTable {
  id: string;
  actor_user_id: string;
  idempotency_key: string | null;
  fhir_type: 'Patient' | 'Practitioner';
  email: string;
  display_name: string;
  resource: string;
  response_kind: 'slim' | 'fhir';
  state: IntentState;
  fhir_id: string | null;
  user_id: string | null;
  lease_until: string;
  attempts: Generated<number>;
  last_error: string | null;
  request_id: string | null;
  client_ip: string | null;
  created_at: string;
  updated_at: string;
}

export interface FhirOrphansTable {
  id: string;
  fhir_type: string;
  fhir_id: string;
  reason: string;
  request_id: string | null;
  created_at: string;
  resolved_at: string | null;
}

/** One login or signup: its refresh tokens rotate within it; revoking it ends its access tokens too. */
export interface SessionsTable {
  id: string;
  user_id: string;
  created_at: string;
  /** Absolute end: refreshing never extends a session past this. */
  expires_at: string;
  revoked_at: string | null;
  revoked_reason: string | null;
  /** The SMART app the session was granted to (its id is the grant's); null for /auth/login. */
  client_id: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface RefreshTokensTable {
  id: string;
  session_id: string;
  /** SHA-256 of the opaque token: the token itself is never stored. */
  token_hash: string;
  created_at: string;
  expires_at: string;
  /** Set when rotated; presenting it again is reuse, which revokes the session. */
  used_at: string | null;
}

export interface RateLimitsTable {
  bucket: string;
  window_start: string;
  count: number;
}

/** A SMART app (OAuth client) an admin registered (migration 0005). */
export interface SmartAppsTable {
  client_id: string;
  name: string;
  client_type: 'public' | 'confidential';
  /** SHA-256 of a confidential app's secret (256 random bits); the secret itself is never stored. */
  secret_hash: string | null;
  /** JSON array of exact redirect URIs. */
  redirect_uris: string;
  /** Space-separated scopes the app may be granted. */
  scopes: string;
  is_active: Generated<Flag>;
  created_by: string | null;
  created_at: string;
  updated_at: string;
}

/** What the authorization server keeps between requests (src/oauth/adapter.ts). */
export interface OAuthStoreTable {
  model: string;
  id: string;
  payload: string;
  grant_id: string | null;
  uid: string | null;
  expires_at: string | null;
  consumed_at: string | null;
}

/** A passthrough write on its way to the FHIR server (src/audit/openWrites.ts). */
export interface OpenWritesTable {
  id: string;
  action: string;
  method: string;
  target_fhir_type: string | null;
  target_fhir_id: string | null;
  operation: string | null;
  actor_user_id: string | null;
  actor_role: string | null;
  request_id: string | null;
  client_ip: string | null;
  started_at: string;
  lease_until: string;
}

/** A "send me a code" request not fulfilled yet (src/auth/codeRequests.ts). */
export interface CodeRequestsTable {
  id: string;
  purpose: string;
  email: string;
  request_id: string | null;
  client_ip: string | null;
  requested_at: string;
  lease_until: string;
}

export interface Database {
  users: UsersTable;
  audit_log: AuditLogTable;
  outbox: OutboxTable;
  idempotency_keys: IdempotencyKeysTable;
  fhir_orphans: FhirOrphansTable;
  provisioning_intents: ProvisioningIntentsTable;
  sessions: SessionsTable;
  refresh_tokens: RefreshTokensTable;
  rate_limits: RateLimitsTable;
  smart_apps: SmartAppsTable;
  oauth_store: OAuthStoreTable;
  open_writes: OpenWritesTable;
  code_requests: CodeRequestsTable;
}

export type UserRow = Selectable<UsersTable>;
export type NewUser = Insertable<UsersTable>;
export type UserUpdate = Updateable<UsersTable>;
export type AuditRow = Selectable<AuditLogTable>;
export type NewAuditEntry = Insertable<AuditLogTable>;
export type OutboxRow = Selectable<OutboxTable>;
export type IntentRow = Selectable<ProvisioningIntentsTable>;
export type SmartAppRow = Selectable<SmartAppsTable>;
