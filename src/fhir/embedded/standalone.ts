import { startEmbeddedFhirServer } from './server.js';

// Dev entry point (`npm run fhir`): the embedded FHIR server on its own. The gateway's own
// config lives in src/config.ts; this separate process reads its three variables directly.

function parsePort(value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') {
    return fallback;
  }
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`FHIR_EMBEDDED_PORT must be an integer between 0 and 65535, got "${value}"`);
  }
  return port;
}

function logLine(msg: string, extra?: Record<string, unknown>): void {
  console.log(JSON.stringify({ time: new Date().toISOString(), msg, ...extra }));
}

async function main(): Promise<void> {
  const startedAt = performance.now();
  const server = await startEmbeddedFhirServer({
    dataDir: process.env.DATA_DIR || './data',
    port: parsePort(process.env.FHIR_EMBEDDED_PORT, 8103),
    // its own variable, not the gateway's HOST: an unauthenticated FHIR server leaves loopback only on purpose
    host: process.env.FHIR_EMBEDDED_HOST || '127.0.0.1',
    log: logLine,
  });
  logLine('embedded FHIR server ready', {
    baseUrl: server.baseUrl,
    startupMs: Math.round(performance.now() - startedAt),
  });

  const stop = (signal: NodeJS.Signals) => {
    logLine('embedded FHIR server stopping', { signal });
    server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logLine('embedded FHIR server failed to stop cleanly', { error: String(err) });
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  logLine('embedded FHIR server failed to start', {
    error: err instanceof Error ? err.message : String(err),
  });
  process.exit(1);
});
