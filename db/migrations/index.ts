import type { Migration } from 'kysely';
import * as m0001 from './0001_users_and_audit.js';
import * as m0002 from './0002_outbox_idempotency_orphans.js';
import * as m0003 from './0003_sessions_reset_rate_limits.js';
import * as m0004 from './0004_intents_lanes_access_audit.js';
import * as m0005 from './0005_smart_apps_oauth.js';
import * as m0006 from './0006_oauth_store_hashed_keys.js';
import * as m0007 from './0007_open_writes.js';
import * as m0008 from './0008_code_requests.js';
import * as m0009 from './0009_login_indexes.js';

/** Every migration, in order. Imported statically so tsx, vitest and a bundle all find them. */
export const migrations: Record<string, Migration> = {
  '0001_users_and_audit': m0001,
  '0002_outbox_idempotency_orphans': m0002,
  '0003_sessions_reset_rate_limits': m0003,
  '0004_intents_lanes_access_audit': m0004,
  '0005_smart_apps_oauth': m0005,
  '0006_oauth_store_hashed_keys': m0006,
  '0007_open_writes': m0007,
  '0008_code_requests': m0008,
  '0009_login_indexes': m0009,
};
