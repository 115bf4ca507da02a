import { type Logger, pino } from 'pino';

export type { Logger };

/**
 * JSON-lines logger. The redact list is a last line of defence: code never passes secrets to
 * the logger, but if a header or body slips in, these paths are censored. No pino transport: pino
 * is bundled (scripts/build.mjs), and a transport loads files of its own beside pino's.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'fhir-facade' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [
          'password',
          '*.password',
          'new_password',
          '*.new_password',
          'access_code',
          '*.access_code',
          '*.code_plain',
          'token',
          '*.token',
          'refresh_token',
          '*.refresh_token',
          'authorization',
          '*.authorization',
          'headers.authorization',
          'code_sealed',
          '*.code_sealed',
          'client_secret',
          '*.client_secret',
        ],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
