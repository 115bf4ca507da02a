import type { Kysely } from 'kysely';
import type { Dialect, LookupConnection } from '../../db/connection.js';
import type { Database, Role } from '../../db/schema.js';
import type { AuditTrail } from '../audit/auditTrail.js';
import type { PasswordHasher } from '../auth/passwords.js';
import type { TokenKeys } from '../auth/signingKeys.js';
import type { AccessTokenClaims, SigningKey } from '../auth/tokens.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { CapabilityCache } from '../fhir/capability.js';
import type { FhirService } from '../fhir/fhirService.js';
import type { PanelMembership } from '../fhir/panelMembership.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics/metrics.js';
import type { SmartAppStatus } from '../oauth/smartAppStatus.js';
import type { Secrets } from '../secrets.js';
import type { BackgroundTasks } from './background.js';
import type { RequestsInFlight } from './inFlight.js';

/** Everything a request handler may use, built once by main.ts (or by a test) and passed to createApp. */
export interface AppDeps {
  readonly config: Config;
  readonly db: Kysely<Database>;
  /** For writes that must never wait on a lock: lease renewals, background workers (db/connection.ts). */
  readonly backgroundDb: Kysely<Database>;
  /**
   * SQLite: the caller check's own connection (db/connection.ts, DatabaseHandle.lookups); absent on
   * PostgreSQL. It reads what is committed: deps with `db` swapped for a transaction still read outside it here.
   */
  readonly lookups?: LookupConnection;
  readonly dialect: Dialect;
  readonly fhir: FhirService;
  /** Which patients are in a practitioner's panel (short-lived, bounded answers). */
  readonly panels: PanelMembership;
  /** The CapabilityStatement /fhir/metadata answers, reused for a while (capability.ts). */
  readonly capabilities: CapabilityCache;
  /** Whether a SMART token's app is still active (short-lived answers, forgotten by every worker on a change). */
  readonly appStatus: SmartAppStatus;
  readonly passwords: PasswordHasher;
  /** The key that signs new tokens: `tokenKeys.signing`. */
  readonly signingKey: SigningKey;
  /** Every key that verifies tokens (the signing key and the previous ones), by kid, and the JWKS. */
  readonly tokenKeys: TokenKeys;
  readonly secrets: Secrets;
  /** Nudges the outbox worker to deliver what a request just queued. */
  readonly outbox: { wake(): void };
  /** Work that runs after the response (see background.ts). */
  readonly background: BackgroundTasks;
  /** Batched audit entries written off the request path: refusals and access events (auditTrail.ts). */
  readonly auditTrail: AuditTrail;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Prometheus metrics (src/metrics/); does nothing unless METRICS_TOKEN is set. */
  readonly metrics: Metrics;
  /** False while other serving processes of a cluster still start (src/cluster.ts); /readyz waits for it. */
  readonly peersReady: () => boolean;
  /** True once the process has begun to stop (SIGTERM): /readyz fails and connections are closed after their answer. */
  readonly stopping: () => boolean;
  /** The requests being handled now (src/http/inFlight.ts): the shutdown waits for them. */
  readonly requests: RequestsInFlight;
}

/** The verified caller, set by `authenticate`. */
export interface Caller {
  readonly userId: string;
  readonly role: Role;
  readonly fhirId: string | null;
  readonly claims: AccessTokenClaims;
}

/** Who made a request, for audit entries and rate limits. */
export interface RequestContext {
  readonly requestId: string;
  readonly clientIp: string | null;
}

export interface AppEnv {
  Variables: {
    deps: AppDeps;
    requestId: string;
    clientIp: string | null;
    caller: Caller;
  };
}
