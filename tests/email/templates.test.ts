import { describe, expect, it } from 'vitest';
import { type AccessCodeMailInput, renderAccessCodeMail, timeLeft } from '../../src/email/templates.js';

const NOW = new Date('2026-11-24T14:03:27Z');
const base: AccessCodeMailInput = {
  name: 'Pat Example',
  role: 'patient',
  code: '7KQ2-M9XD-4HTP-R3VW',
  expiresAt: new Date(NOW.getTime() + 24 * 3_600_000),
  now: NOW,
  appName: 'Test Clinic',
  signupUrl: 'https://app.example/signup',
  email: 'pat+tag@example.com',
  purpose: 'signup',
};

function hrefs(html: string): string[] {
  return [...html.matchAll(/href="([^"]*)"/g)].map((m) => m[1] ?? '');
}

describe('renderAccessCodeMail', () => {
  it('uses the exact signup subject with the app name', () => {
    expect(renderAccessCodeMail(base).subject).toBe('Your Access Code to Register on Test Clinic');
  });

  it('greets the person, shows the grouped code, the UTC expiry with hours left and the ignore line in both parts', () => {
    const mail = renderAccessCodeMail(base);
    for (const part of [mail.text, mail.html]) {
      expect(part).toContain('Hello Pat Example,');
      expect(part).toContain('7KQ2-M9XD-4HTP-R3VW');
      expect(part).toContain('2026-11-25 14:03 UTC');
      expect(part).toContain('in 24 hours');
      expect(part).toContain('to see your health records');
      expect(part).toContain('If you were not expecting this email, you can ignore it.');
    }
  });

  it('greets a name from a raw FHIR create without its bidi overrides or controls: it cannot render as another', () => {
    const mail = renderAccessCodeMail({ ...base, name: '\u202eeeL nnA\u0007 \u2066Doe\u2069' });
    for (const part of [mail.text, mail.html]) {
      expect(part).toContain('Hello eeL nnA Doe,');
      expect(part).not.toMatch(/[\u202a-\u202e\u2066-\u2069]/);
      expect(part).not.toContain('\u0007');
    }
  });

  it('groups a compact code in fours', () => {
    const mail = renderAccessCodeMail({ ...base, code: '7KQ2M9XD4HTPR3VW' });
    expect(mail.text).toContain('7KQ2-M9XD-4HTP-R3VW');
  });

  it('links to the signup page with the email prefilled and never puts the code in the link', () => {
    const mail = renderAccessCodeMail(base);
    const link = 'https://app.example/signup?email=pat%2Btag%40example.com';
    expect(mail.text).toContain(link);
    expect(hrefs(mail.html)).toEqual([link]);
    for (const url of [...(mail.text.match(/https?:\/\/\S+/g) ?? []), ...hrefs(mail.html)]) {
      expect(url).not.toContain('7KQ2');
      expect(url).not.toContain('7KQ2M9XD4HTPR3VW');
    }
  });

  it('keeps an existing query string on the signup URL', () => {
    const mail = renderAccessCodeMail({ ...base, signupUrl: 'https://app.example/signup?lang=en' });
    expect(mail.text).toContain('https://app.example/signup?lang=en&email=pat%2Btag%40example.com');
  });

  it('tells a practitioner the account gives access to the records of their patients', () => {
    const mail = renderAccessCodeMail({ ...base, role: 'practitioner' });
    expect(mail.text).toContain('to access the records of your patients');
    expect(mail.html).toContain('to access the records of your patients');
    expect(mail.text).not.toContain('to see your health records');
  });

  it('uses the password reset subject and the reset page when the purpose is password_reset', () => {
    const mail = renderAccessCodeMail({
      ...base,
      purpose: 'password_reset',
      resetUrl: 'https://app.example/reset',
    });
    expect(mail.subject).toBe('Your password reset code for Test Clinic');
    expect(mail.text).toContain('https://app.example/reset?email=pat%2Btag%40example.com');
    expect(mail.text).not.toContain('/signup');
    expect(mail.text).toContain('If you were not expecting this email, you can ignore it.');
  });

  it('HTML-escapes every interpolated value in the HTML part', () => {
    const mail = renderAccessCodeMail({
      ...base,
      name: '<img src=x onerror=alert(1)> "Bob" & \'Co\'',
      appName: 'A & B <Clinic>',
      email: 'x"onmouseover="alert(1)@example.com',
    });
    expect(mail.html).not.toContain('<img');
    expect(mail.html).not.toContain('<Clinic>');
    expect(mail.html).toContain('&lt;img src=x onerror=alert(1)&gt; &quot;Bob&quot; &amp; &#39;Co&#39;');
    expect(mail.html).toContain('A &amp; B &lt;Clinic&gt;');
    expect(mail.html).not.toContain('onmouseover="');
  });

  it('has no external images, stylesheets or scripts in the HTML', () => {
    const { html } = renderAccessCodeMail(base);
    expect(html).not.toMatch(/<img|<link|<script|src=|url\(/i);
    expect(html).toContain('<html lang="en">');
  });

  it('states that the code has expired instead of a negative time left', () => {
    const mail = renderAccessCodeMail({ ...base, now: new Date(base.expiresAt.getTime() + 1000) });
    expect(mail.text).toContain('The code expired on 2026-11-25 14:03 UTC');
    expect(mail.text).not.toContain('in -');
  });

  it('counts time left in rounded hours, then minutes', () => {
    const at = (ms: number) => timeLeft(new Date(NOW.getTime() + ms), NOW);
    expect(at(24 * 3_600_000 - 1_000)).toBe('in 24 hours');
    expect(at(3_600_000)).toBe('in 1 hour');
    expect(at(35 * 60_000)).toBe('in 35 minutes');
    expect(at(10_000)).toBe('in 1 minute');
    expect(at(0)).toBeUndefined();
  });
});
