import fs from 'node:fs';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { generateAccessCode } from '../../src/auth/accessCodes.js';
import { assertPlainAddress, createMailer, InvalidMailError } from '../../src/email/mailer.js';
import { createLogger } from '../../src/logger.js';
import { tempDir } from '../helpers/gateway.js';
import { startSmtpCapture } from '../helpers/smtp.js';
import { captureLogger, codeForms, INJECTED_RECIPIENTS } from './fixtures.js';

const silent = createLogger('silent');
const open: { close(): unknown }[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function dir(): string {
  const d = tempDir('ff-mailer-');
  dirs.push(d);
  return d;
}

const message = (to: string, code = generateAccessCode()) => ({
  to,
  subject: 'Your Access Code to Register on Test Clinic',
  text: `Your code: ${code}`,
  html: `<p>Your code: <strong>${code}</strong></p>`,
});

describe('assertPlainAddress', () => {
  it('accepts one plain address, including plus tags, apostrophes and subdomains', () => {
    for (const ok of [
      'pat@example.com',
      'pat+tag@example.com',
      "o'brien@mail.example.co.uk",
      'A.B-c_d@x-y.org',
    ]) {
      expect(() => assertPlainAddress(ok), ok).not.toThrow();
    }
  });

  it('refuses CR/LF, lists, display names, angle brackets and comments', () => {
    for (const bad of INJECTED_RECIPIENTS) {
      expect(() => assertPlainAddress(bad), JSON.stringify(bad)).toThrow(InvalidMailError);
    }
  });
});

describe('createMailer in SMTP mode', () => {
  it('delivers a text and HTML message to a real SMTP server with From and Auto-Submitted', async () => {
    const smtp = await startSmtpCapture();
    open.push(smtp);
    const mailer = createMailer({
      smtpUrl: smtp.url,
      from: 'Clinic <no-reply@clinic.example>',
      dataDir: dir(),
      logger: silent,
    });
    open.push(mailer);
    expect(mailer.mode).toBe('smtp');
    await mailer.send(message('pat@example.com', 'AAAA-BBBB-CCCC-DDDD'));
    const [mail] = await smtp.waitFor(1);
    expect(mail?.subject).toBe('Your Access Code to Register on Test Clinic');
    expect(mail?.to && !Array.isArray(mail.to) ? mail.to.value.map((a) => a.address) : []).toEqual([
      'pat@example.com',
    ]);
    expect(mail?.from?.value[0]?.address).toBe('no-reply@clinic.example');
    expect(mail?.text).toContain('AAAA-BBBB-CCCC-DDDD');
    expect(mail?.html).toContain('<strong>AAAA-BBBB-CCCC-DDDD</strong>');
    expect(mail?.headers.get('auto-submitted')).toBe('auto-generated');
  });

  it('refuses an injected recipient or a multi-line subject before anything reaches the SMTP server', async () => {
    const smtp = await startSmtpCapture();
    open.push(smtp);
    const mailer = createMailer({
      smtpUrl: smtp.url,
      from: 'no-reply@clinic.example',
      dataDir: dir(),
      logger: silent,
    });
    for (const bad of INJECTED_RECIPIENTS) {
      await expect(mailer.send(message(bad)), JSON.stringify(bad)).rejects.toBeInstanceOf(InvalidMailError);
    }
    await expect(
      mailer.send({ ...message('pat@example.com'), subject: 'Hello\r\nBcc: c@z.com' }),
    ).rejects.toBeInstanceOf(InvalidMailError);
    await expect(
      mailer.send({ ...message('pat@example.com'), subject: 'Hello\nX-Evil: 1' }),
    ).rejects.toBeInstanceOf(InvalidMailError);
    await new Promise((r) => setTimeout(r, 100));
    expect(smtp.messages).toHaveLength(0);
    mailer.close();
  });
});

/** A mailer writing .eml files into `dataDir`, logging nothing. */
const fileMailer = (dataDir: string) =>
  createMailer({ smtpUrl: undefined, from: 'no-reply@clinic.example', dataDir, logger: silent });

describe('createMailer in file mode', () => {
  it('makes a mail folder made elsewhere with a wider mode 0700', () => {
    const dataDir = dir();
    const mailDir = path.join(dataDir, 'mail');
    fs.mkdirSync(mailDir, { mode: 0o755 });
    fs.chmodSync(mailDir, 0o755);
    fileMailer(dataDir);
    expect(fs.statSync(mailDir).mode & 0o777).toBe(0o700);
  });

  it('writes one .eml per message into dataDir/mail (0700) and logs the path, never the code nor the recipient', async () => {
    const dataDir = dir();
    const { logger, lines } = captureLogger();
    const mailer = createMailer({ smtpUrl: undefined, from: 'no-reply@clinic.example', dataDir, logger });
    expect(mailer.mode).toBe('file');
    const codes = [generateAccessCode(), generateAccessCode()];
    await mailer.send(message('one@example.com', codes[0]));
    await mailer.send(message('two@example.com', codes[1]));

    const mailDir = path.join(dataDir, 'mail');
    expect(fs.statSync(mailDir).mode & 0o777).toBe(0o700);
    const files = fs.readdirSync(mailDir).sort();
    expect(files).toHaveLength(2);
    for (const f of files) {
      expect(f).toMatch(/^\d{4}-\d{2}-\d{2}T[\d-]+Z-[0-9a-f]{12}\.eml$/);
      expect(fs.statSync(path.join(mailDir, f)).mode & 0o777).toBe(0o600);
    }

    const parsed = await Promise.all(files.map((f) => simpleParser(fs.readFileSync(path.join(mailDir, f)))));
    const byTo = new Map(parsed.map((m) => [m.to && !Array.isArray(m.to) ? m.to.text : '', m]));
    expect(byTo.get('one@example.com')?.subject).toBe('Your Access Code to Register on Test Clinic');
    expect(byTo.get('one@example.com')?.text).toContain(codes[0]);
    expect(byTo.get('two@example.com')?.html).toContain(codes[1]);
    // RFC 5322 line endings
    expect(fs.readFileSync(path.join(mailDir, files[0] ?? '')).toString('utf8')).toContain('\r\n');

    const logged = lines.map((l) => JSON.parse(l) as { mail_file?: string; to?: string });
    expect(logged.map((l) => l.mail_file).sort()).toEqual(files.map((f) => path.join(mailDir, f)));
    const all = lines.join('\n');
    // an address is personal data: the .eml file names its recipient, the log does not
    expect(all).not.toMatch(/one@example\.com|two@example\.com/);
    for (const code of codes) for (const form of codeForms(code ?? '')) expect(all).not.toContain(form);
    expect(all).not.toContain('Your code');
    mailer.close();
  });

  it('leaves no half-written temporary file when the disk fills up (review S2)', async () => {
    const dataDir = dir();
    const mailer = fileMailer(dataDir);
    // the disk stands in: the write starts the file, then the device is full
    const writeFile = vi.spyOn(fs.promises, 'writeFile').mockImplementationOnce(async (file) => {
      fs.writeFileSync(file as string, '');
      throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    });
    try {
      await expect(mailer.send(message('full@example.com'))).rejects.toThrow(/ENOSPC/);
    } finally {
      writeFile.mockRestore();
    }
    expect(fs.readdirSync(path.join(dataDir, 'mail'))).toEqual([]);
    await mailer.send(message('full@example.com'));
    expect(fs.readdirSync(path.join(dataDir, 'mail'))).toHaveLength(1);
    mailer.close();
  });

  it('writes no file for a refused recipient', async () => {
    const dataDir = dir();
    const mailer = fileMailer(dataDir);
    for (const bad of INJECTED_RECIPIENTS) {
      await expect(mailer.send(message(bad))).rejects.toBeInstanceOf(InvalidMailError);
    }
    expect(fs.readdirSync(path.join(dataDir, 'mail'))).toEqual([]);
    mailer.close();
  });
});
