import { generateKeyPairSync } from 'node:crypto';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SigningKey } from '../../src/auth/tokens.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { provision, signup } from '../helpers/journey.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * An access token is never signed inside a write transaction: there it would hold SQLite's write
 * lock (and the main connection) for the signature and its await on the thread pool. At the
 * moment the signing key is read, a prober of the test's own finds the write lock free, and an
 * observer that sees committed rows only finds the new session committed (login, signup, password
 * change); a refresh signs before its rotation, so that a signature that fails leaves the
 * presented token usable. SQLite only: the observer must read synchronously; the code path is the
 * same on PostgreSQL. Not seen: a signature at a transaction's start, before its first write
 * (SQLite's BEGIN is deferred and takes no lock until then).
 */
describe('access tokens are signed outside the write transaction (sqlite)', () => {
  let gw: TestGateway;
  let smtp: SmtpCapture;
  let observer: SqliteDatabase.Database;
  let prober: SqliteDatabase.Database;
  /** What was seen at each signature: the committed sessions and refresh tokens, and the write lock. */
  let seenAtSigning: { sessions: number; refreshTokens: number; writeLockFree: boolean }[] = [];
  /** While set, the signing key is one ES256 cannot sign with: the signature fails. */
  let failSigning = false;
  const unusableKey = generateKeyPairSync('ed25519').privateKey;

  const committed = () => ({
    sessions: (observer.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n,
    refreshTokens: (observer.prepare('SELECT count(*) AS n FROM refresh_tokens').get() as { n: number }).n,
  });

  /**
   * Whether no connection holds the write lock. The audit writer thread holds it for a flush of a
   * few ms (longer on a loaded CI machine), so only a lock held through a whole second of tries
   * counts: the main connection's, since its thread is blocked here, in the signing.
   */
  const writeLockFree = () => {
    for (let attempt = 0; attempt < 500; attempt++) {
      try {
        prober.exec('BEGIN IMMEDIATE');
        prober.exec('ROLLBACK');
        return true;
      } catch {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
      }
    }
    return false;
  };

  beforeAll(async () => {
    smtp = await startSmtpCapture();
    gw = await startTestGateway({ env: { SMTP_URL: smtp.url } });
    const file = path.join(gw.dataDir, 'fhir-facade.sqlite');
    observer = new SqliteDatabase(file, { readonly: true });
    prober = new SqliteDatabase(file, { timeout: 0 });
    const signing = gw.deps.signingKey;
    const watched: SigningKey = {
      kid: signing.kid,
      publicKey: signing.publicKey,
      publicJwk: signing.publicJwk,
      get privateKey() {
        seenAtSigning.push({ ...committed(), writeLockFree: writeLockFree() });
        return failSigning ? unusableKey : signing.privateKey;
      },
    };
    (gw.deps as { signingKey: SigningKey }).signingKey = watched;
  });
  afterAll(async () => {
    observer.close();
    prober.close();
    await gw.close();
    await smtp.close();
  });

  /** Runs one flow and answers what was committed before it and what was seen at its one signature. */
  async function signedBy(flow: () => Promise<Response>, status = 200) {
    const before = committed();
    seenAtSigning = [];
    const response = await flow();
    expect(response.status).toBe(status);
    expect(seenAtSigning).toHaveLength(1);
    expect(seenAtSigning[0]?.writeLockFree).toBe(true);
    return { before, atSigning: seenAtSigning[0]!, body: (await response.json()) as Record<string, string> };
  }

  const refresh = (refresh_token: string) =>
    gw.call('/auth/refresh', { method: 'POST', json: { refresh_token } });

  it('signs after the commit on signup, login and password change, and before the rotation on refresh', async () => {
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

    const refreshed = await signedBy(() => refresh(loggedIn.body.refresh_token!));
    expect(refreshed.atSigning.refreshTokens).toBe(refreshed.before.refreshTokens);
    expect(committed().refreshTokens).toBe(refreshed.before.refreshTokens + 1);

    const changed = await signedBy(() =>
      gw.call('/auth/password/change', {
        method: 'POST',
        token: refreshed.body.token,
        json: { current_password: password, new_password: 'another long and plain passphrase' },
      }),
    );
    expect(changed.atSigning.sessions).toBe(changed.before.sessions + 1);
  });

  it('leaves a refresh token usable when the signature fails, with no reuse read into it', async () => {
    const user = await gw.seedUser({ role: 'patient' });
    const login = await gw.call('/auth/login', {
      method: 'POST',
      json: { email: user.email, password: user.password },
    });
    const { refresh_token } = (await login.json()) as { refresh_token: string };
    failSigning = true;
    try {
      expect((await refresh(refresh_token)).status).toBe(500);
    } finally {
      failSigning = false;
    }
    expect((await refresh(refresh_token)).status).toBe(200);
    const reuse = await gw.deps.db
      .selectFrom('audit_log')
      .select('id')
      .where('action', '=', 'auth.refresh_reuse')
      .where('actor_user_id', '=', user.id)
      .execute();
    expect(reuse).toEqual([]);
  });
});
