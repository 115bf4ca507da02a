import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { assertPlainAddress } from '../../src/email/mailer.js';
import { EmailSchema, NewEmailSchema } from '../../src/http/schemas.js';
import { validateProvisionedResource } from '../../src/provisioning/fhirValidation.js';

/**
 * An address is taken by the request schemas (signup, login, resend, forgot, reset, the slim
 * provisioning DTOs), the FHIR profiles (a raw POST /fhir/Patient's email telecom) and the
 * configuration (ADMIN_EMAIL), and is finally handed to the mailer. An address one of them
 * accepted and the mailer refused made provisioning create the FHIR resource, then fail to queue
 * the access-code mail and answer 503: every rule must give the mailer's answer.
 */

const label63 = 'x'.repeat(63);
const ADDRESSES: readonly [string, boolean][] = [
  ['ann@example.com', true],
  ['ann+tag@mail.example.co.uk', true],
  ["o'brien@example.com", true],
  ['a.b-c_d@x-y.org', true],
  [`ann@${label63}.com`, true],
  [`${'a'.repeat(64)}@${label63}.${label63}.${'b'.repeat(57)}.com`, true], // 254 characters
  ['ann@example-.com', false],
  ['ann@-example.com', false],
  [`ann@${label63}x.com`, false],
  ['josé@example.com', false],
  ['ann@exämple.com', false],
  ['ann@localhost', false],
  ['ann..lee@example.com', false],
  ['.ann@example.com', false],
  [`${'a'.repeat(64)}@${label63}.${label63}.${'b'.repeat(58)}.com`, false], // 255 characters
  [`${'a'.repeat(64)}@example.com`, true],
];

function mailerAccepts(address: string): boolean {
  try {
    assertPlainAddress(address);
    return true;
  } catch {
    return false;
  }
}

async function profileAccepts(address: string): Promise<boolean> {
  const patient = {
    resourceType: 'Patient',
    name: [{ family: 'Lee' }],
    telecom: [{ system: 'email', value: address }],
  };
  try {
    await validateProvisionedResource('Patient', patient);
    return true;
  } catch {
    return false;
  }
}

function configAccepts(address: string): boolean {
  try {
    loadConfig({ ADMIN_EMAIL: address, ADMIN_PASSWORD: 'correct horse battery staple' });
    return true;
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return false;
  }
}

describe('an email address', () => {
  it.each(ADDRESSES)(
    '%s: the mailer, the request schema, the FHIR profile and the config agree (%s)',
    async (address, valid) => {
      expect(address.length <= 254 || !valid).toBe(true);
      expect(mailerAccepts(address)).toBe(valid);
      expect(EmailSchema.safeParse(address).success).toBe(valid);
      expect(NewEmailSchema.safeParse(address).success).toBe(valid);
      expect(await profileAccepts(address)).toBe(valid);
      expect(configAccepts(address)).toBe(valid);
    },
  );

  // RFC 5321 4.5.3.1.1: a mail server may refuse a local part over 64 characters (review F)
  it.each([
    `${'a'.repeat(65)}@example.com`,
    `${'a'.repeat(65)}@${label63}.${label63}.${'b'.repeat(56)}.com`, // 254 characters
  ])(
    '%s: no account is created with it, but one made before still logs in and gets its mail',
    async (address) => {
      expect(NewEmailSchema.safeParse(address).success).toBe(false);
      expect(await profileAccepts(address)).toBe(false);
      expect(EmailSchema.safeParse(address).success).toBe(true);
      expect(mailerAccepts(address)).toBe(true);
      expect(configAccepts(address)).toBe(true);
    },
  );
});
