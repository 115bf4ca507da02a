/** What a cluster worker (src/cluster.ts) learns from the primary, through its environment. */
export const WORKER_ENV = {
  /** The embedded FHIR server the primary started (its base URL), when FHIR_BASE_URL was unset. */
  fhirBaseUrl: 'FF_EMBEDDED_FHIR_URL',
  /** "1" for the worker that runs the background work. */
  background: 'FF_BACKGROUND',
} as const;
