import { parseArgs } from 'node:util';
import { migrateToLatest, openDatabase } from '../db/connection.js';
import { createPasswordHasher } from '../src/auth/passwords.js';
import { systemClock } from '../src/clock.js';
import { ConfigError, loadConfig, loadDotEnv } from '../src/config.js';
import { AdminAccountError, adminEmailOf, ensureAdminAccount } from '../src/users/adminAccounts.js';
import { readSecret } from './readSecret.js';

/**
 * `npm run admin:create -- --email admin@example.com`: creates an active admin in the
 * configured database. The password is read from the terminal without echo (or from one line
 * of standard input when it is not a terminal), never from the command line, where it would
 * land in shell history and `ps`.
 */
async function main(): Promise<void> {
  const { values } = parseArgs({ options: { email: { type: 'string' } } });
  if (!values.email) throw new Error('usage: npm run admin:create -- --email admin@example.com');
  // refused before the password is asked for
  const email = adminEmailOf(values.email);
  loadDotEnv();
  const config = loadConfig();
  const password = await readSecret('Password for the new admin: ');
  if (process.stdin.isTTY) {
    const again = await readSecret('Repeat the password: ');
    if (again !== password) throw new Error('The passwords do not match.');
  }
  const database = openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  const passwords = await createPasswordHasher();
  try {
    await migrateToLatest(database.db);
    const result = await ensureAdminAccount(
      {
        db: database.db,
        clock: systemClock,
        passwords,
        passwordMinLength: config.passwordMinLength,
        appName: config.appName,
      },
      { email, password, source: 'cli' },
    );
    if (result === 'exists') throw new Error(`An account with the email ${email} already exists.`);
    process.stdout.write(`Admin ${email} created. Log in with POST /auth/login.\n`);
  } finally {
    await passwords.close();
    await database.close();
  }
}

main().catch((error: unknown) => {
  const known = error instanceof ConfigError || error instanceof AdminAccountError || error instanceof Error;
  process.stderr.write(`${known ? (error as Error).message : String(error)}\n`);
  process.exit(1);
});
