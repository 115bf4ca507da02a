import { ConfigError, loadConfig, loadDotEnv } from './config.js';
import { createLogger } from './logger.js';
import { startGateway } from './server.js';

/** Entry point of `npm start`: config -> gateway -> wait for a signal -> graceful shutdown. */
async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    loadDotEnv();
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
  const logger = createLogger(config.logLevel);
  const gateway = await startGateway(config, { logger });
  logger.info(
    {
      url: gateway.url,
      public_url: config.publicBaseUrl,
      fhir: gateway.embeddedFhirUrl ? 'embedded' : 'external',
    },
    `fhir-facade listening on ${gateway.url}`,
  );

  const shutdown = (signal: string) => {
    logger.info({ signal }, 'shutting down');
    gateway.close().then(
      () => process.exit(0),
      (error) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

main().catch((error: unknown) => {
  process.stderr.write(
    `fhir-facade failed to start: ${error instanceof Error ? error.message : String(error)}\n`,
  );
  process.exit(1);
});
