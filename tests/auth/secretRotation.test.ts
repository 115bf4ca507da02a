import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessCodeMatches, hashAccessCode } from '../../src/auth/accessCodes.js';
import { enqueueAccessCodeMail } from '../../src/email/outbox.js';
import { cursorForLink, verifyCursor } from '../../src/fhir/links.js';
import { loadSecrets, seal, unseal } from '../../src/secrets.js';
import { startTestGateway, type TestGateway, tempDir } from '../helpers/gateway.js';
import { codeIn, mailsTo, provision, signup } from '../helpers/journey.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * Rotating APP_SECRET with APP_SECRET_PREVIOUS voids nothing in flight: an access code hashed,
 * a paging cursor signed and a mail sealed under the old secret still work while it is the
 * previous one; what is made from then on uses the new secret; once the previous secret is
 * removed, only what the old secret made stops working. Each phase is a restart on the same
 * database and DATA_DIR.
 */

const OLD_SECRET = randomBytes(32).toString('base64url');
const NEW_SECRET = randomBytes(32).toString('base64url');
const PASSWORD = 'a long and plain passphrase';

describe('APP_SECRET rotation', () => {
  const dataDir = tempDir();
  let smtp: SmtpCapture;
  const gateways: TestGateway[] = [];
  const start = async (env: Record<string, string>) => {
    const gw = await startTestGateway({ dataDir, env: { SMTP_URL: smtp.url, ...env } });
    gateways.push(gw);
    return gw;
  };
  const stop = async (gw: TestGateway) => {
    await gw.close();
    gateways.splice(gateways.indexOf(gw), 1);
  };
  beforeAll(async () => {
    smtp = await startSmtpCapture();
  });
  afterAll(async () => {
    for (const gw of gateways) await gw.close();
    await smtp.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  /** A `next` link of an admin's Patient search: its `_cursor` is signed with the cursor key. */
  const nextLink = async (gw: TestGateway) => {
    const response = await gw.call('/fhir/Patient?_count=1', { token: await gw.adminToken() });
    expect(response.status).toBe(200);
    const bundle = (await response.json()) as { link?: Array<{ relation: string; url: string }> };
    const next = bundle.link?.find((l) => l.relation === 'next')?.url;
    expect(next).toMatch(/_cursor=/);
    return new URL(next!).search;
  };
  const page = async (gw: TestGateway, search: string) =>
    (await gw.call(`/fhir/Patient${search}`, { token: await gw.adminToken() })).status;
  const signupStatus = async (gw: TestGateway, email: string, code: string) =>
    (await signup(gw, { email, access_code: code, password: PASSWORD })).status;

  it('keeps codes, cursors and sealed mails of the old secret working until it is removed', async () => {
    const before = await start({ APP_SECRET: OLD_SECRET });
    const ann = await provision(before, smtp, 'ann-rotation@example.com');
    const bob = await provision(before, smtp, 'bob-rotation@example.com');
    const oldCursor = await nextLink(before);
    expect(await page(before, oldCursor)).toBe(200);
    const oldSealingKey = before.deps.secrets.sealingKey;
    const oldCodeKey = before.deps.secrets.codeHmacKey;
    await stop(before);

    const during = await start({ APP_SECRET: NEW_SECRET, APP_SECRET_PREVIOUS: OLD_SECRET });
    expect(await signupStatus(during, ann.email, ann.code), 'a code hashed with the old secret').toBe(201);
    expect(await page(during, oldCursor), 'a cursor sealed with the old secret').toBe(200);
    // a mail the old secret sealed and no instance delivered yet (e.g. the SMTP server was down)
    const carol = await during.seedUser({ role: 'patient', registered: false });
    const queuedCode = 'ABCD-EFGH-JKMN-PQRS';
    // the account holds that code's hash, made with the old secret too (the worker mails only a live code)
    await during.deps.db
      .updateTable('users')
      .set({ access_code_hash: hashAccessCode(oldCodeKey, 'signup', carol.email, queuedCode) })
      .where('id', '=', carol.id)
      .execute();
    await enqueueAccessCodeMail(during.deps.db, during.deps.clock, oldSealingKey, {
      template: 'access_code',
      to: carol.email,
      name: 'Carol',
      role: 'patient',
      purpose: 'signup',
      code: queuedCode,
      expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    });
    during.deps.outbox.wake();
    const [mail] = await mailsTo(smtp, carol.email);
    expect(codeIn(mail!), 'the worker opened it with the previous key').toBe(queuedCode);
    // what is made now uses the new secret
    const newCursor = await nextLink(during);
    const dave = await provision(during, smtp, 'dave-rotation@example.com');
    await stop(during);

    const after = await start({ APP_SECRET: NEW_SECRET });
    expect(await signupStatus(after, bob.email, bob.code), 'the old secret is gone').toBe(400);
    expect(await page(after, oldCursor)).toBe(400);
    expect(await page(after, newCursor)).toBe(200);
    expect(await signupStatus(after, dave.email, dave.code)).toBe(201);
  });

  it('takes over a generated DATA_DIR/app-secret given as base64url:', () => {
    const dir = tempDir();
    try {
      const generated = loadSecrets(undefined, undefined, dir);
      const file = fs.readFileSync(path.join(dir, 'app-secret'), 'utf8').trim();
      const moved = loadSecrets(`base64url:${file}`, undefined, tempDir());
      expect(moved.codeHmacKey.current.equals(generated.codeHmacKey.current)).toBe(true);
      const rotated = loadSecrets(NEW_SECRET, `base64url:${file}`, dir);
      expect(rotated.cursorKey.all).toHaveLength(2);
      expect(rotated.cursorKey.all[1]!.equals(generated.cursorKey.current)).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('key rings (current + previous)', () => {
  const old = loadSecrets(OLD_SECRET, undefined, tempDir());
  const ring = loadSecrets(NEW_SECRET, OLD_SECRET, tempDir());
  const fresh = loadSecrets(NEW_SECRET, undefined, tempDir());

  it('makes with the current key and checks with both', () => {
    const code = 'ABCD-EFGH-JKMN-PQRS';
    const oldHash = hashAccessCode(old.codeHmacKey, 'signup', 'a@example.com', code);
    const newHash = hashAccessCode(ring.codeHmacKey, 'signup', 'a@example.com', code);
    expect(newHash).toBe(hashAccessCode(fresh.codeHmacKey, 'signup', 'a@example.com', code));
    expect(accessCodeMatches(ring.codeHmacKey, 'signup', 'a@example.com', code, oldHash)).toBe(true);
    expect(accessCodeMatches(ring.codeHmacKey, 'signup', 'a@example.com', code, newHash)).toBe(true);
    expect(accessCodeMatches(fresh.codeHmacKey, 'signup', 'a@example.com', code, oldHash)).toBe(false);
    expect(
      accessCodeMatches(ring.codeHmacKey, 'signup', 'a@example.com', 'WXYZ-WXYZ-WXYZ-WXYZ', oldHash),
    ).toBe(false);

    const sealed = seal(old.sealingKey, 'secret');
    expect(unseal(ring.sealingKey, sealed)).toBe('secret');
    expect(() => unseal(fresh.sealingKey, sealed)).toThrow();
    expect(unseal(fresh.sealingKey, seal(ring.sealingKey, 'new'))).toBe('new');

    const binding = { userId: 'u1', route: 'fhir', type: 'Patient', now: new Date() };
    const oldCursor = cursorForLink(
      old.cursorKey,
      binding,
      'https://up/fhir?_getpages=x',
      'https://up/fhir',
    )!;
    expect(verifyCursor(ring.cursorKey, oldCursor, binding)).toBe('?_getpages=x');
    expect(verifyCursor(fresh.cursorKey, oldCursor, binding)).toBeUndefined();
  });

  it.each([4, 8, 12, 15])(
    'refuses a sealed value whose tag was cut to %i bytes (GCM would verify it)',
    (bytes) => {
      const [version, iv, tag, ciphertext] = seal(ring.sealingKey, 'secret').split('.') as [
        string,
        string,
        string,
        string,
      ];
      const cut = Buffer.from(tag, 'base64url').subarray(0, bytes).toString('base64url');
      expect(() => unseal(ring.sealingKey, [version, iv, cut, ciphertext].join('.'))).toThrow();
    },
  );
});
