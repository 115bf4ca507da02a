/** What a cluster worker (src/cluster.ts) learns from the primary, through its environment. */
export const WORKER_ENV = {
  /** The embedded FHIR server the primary started (its base URL), when FHIR_BASE_URL was unset. */
  fhirBaseUrl: 'FF_EMBEDDED_FHIR_URL',
  /** "1" for the worker that runs the background work. */
  background: 'FF_BACKGROUND',
} as const;

/** Messages between the primary and its workers during a start, and the watchdog's (src/cluster.ts). */
export const CLUSTER_MESSAGE = {
  /** Worker to primary: booted, may I open the database? */
  mayOpen: 'fhir-facade:may-open',
  /** Primary to worker: open it (migrated; the signing key and app secret exist in DATA_DIR). */
  open: 'fhir-facade:open',
  /** Worker to primary: booted, may I listen? */
  mayListen: 'fhir-facade:may-listen',
  /** Primary to worker: listen (worker 0 serves, so the first admin exists). */
  listen: 'fhir-facade:listen',
  /** Primary to worker: every worker listens, /readyz may say ready. */
  allListening: 'fhir-facade:all-listening',
  /** Primary to worker: does your event loop still turn? */
  ping: 'fhir-facade:ping',
  /** Worker to primary: it does. */
  pong: 'fhir-facade:pong',
} as const;

/** True when `message` is a cluster message of `type`. */
export function isClusterMessage(message: unknown, type: string): boolean {
  return (message as { type?: unknown } | null)?.type === type;
}
