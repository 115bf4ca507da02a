import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SigningKey } from '../../src/auth/tokens.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { provision, signup } from '../helpers/journey.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * An access token is signed only once the session it names is committed: signing inside the
 * write transaction would hold SQLite's write lock (and the main connection) for the signature
 * and its await on the thread pool. Observed from a connection of the test's own, which sees
 * committed rows only, at the moment the signing key is read. SQLite only: the observer must read
 * synchronously; the code path is the same on PostgreSQL.
 */
describe('access tokens are signed after the session commits (sqlite)', () => {
  let gw: TestGateway;
  let smtp: SmtpCapture;
  let observer: SqliteDatabase.Database;
  /** What the observer saw at each signature: the committed sessions and refresh tokens. */
  let seenAtSigning: { sessions: number; refreshTokens: number }[] = [];

  const committed = () => ({
    sessions: (observer.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n,
    refreshTokens: (observer.prepare('SELECT count(*) AS n FROM refresh_tokens').get() as { n: number }).n,
  });

  beforeAll(async () => {
    smtp = await startSmtpCapture();
    gw = await startTestGateway({ env: { SMTP_URL: smtp.url } });
    observer = new SqliteDatabase(path.join(gw.dataDir, 'fhir-facade.sqlite'), { readonly: true });
    const signing = gw.deps.signingKey;
    const watched: SigningKey = {
      kid: signing.kid,
      publicKey: signing.publicKey,
      publicJwk: signing.publicJwk,
      get privateKey() {
        seenAtSigning.push(committed());
        return signing.privateKey;
      },
    };
    (gw.deps as { signingKey: SigningKey }).signingKey = watched;
  });
  afterAll(async () => {
    observer.close();
    await gw.close();
    await smtp.close();
  });

  /** Runs one flow and answers what was committed before it and at its one signature. */
  async function signedBy(flow: () => Promise<Response>, status = 200) {
    const before = committed();
    seenAtSigning = [];
    const response = await flow();
    expect(response.status).toBe(status);
    expect(seenAtSigning).toHaveLength(1);
    return { before, atSigning: seenAtSigning[0]!, body: (await response.json()) as Record<string, string> };
  }

  it('on login, signup, refresh and password change', async () => {
    const person = await provision(gw, smtp, 'committed@example.com');
    const password = 'a long and plain passphrase';

    const signedUp = await signedBy(
      () => signup(gw, { email: person.email, access_code: person.code, password }),
      201,
    );
    expect(signedUp.atSigning.sessions).toBe(signedUp.before.sessions + 1);

    const loggedIn = await signedBy(() =>
      gw.call('/auth/login', { method: 'POST', json: { email: person.email, password } }),
    );
    expect(loggedIn.atSigning.sessions).toBe(loggedIn.before.sessions + 1);

    const refreshed = await signedBy(() =>
      gw.call('/auth/refresh', { method: 'POST', json: { refresh_token: loggedIn.body.refresh_token } }),
    );
    expect(refreshed.atSigning.refreshTokens).toBe(refreshed.before.refreshTokens + 1);

    const changed = await signedBy(() =>
      gw.call('/auth/password/change', {
        method: 'POST',
        token: refreshed.body.token,
        json: { current_password: password, new_password: 'another long and plain passphrase' },
      }),
    );
    expect(changed.atSigning.sessions).toBe(changed.before.sessions + 1);
  });
});
