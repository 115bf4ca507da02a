/**
 * The one definition of an email address the gateway accepts: the request schemas
 * (src/http/schemas.ts), the FHIR profiles' email invariant (src/provisioning/profileSpecs.ts),
 * ADMIN_EMAIL (src/config.ts) and the mailer (src/email/mailer.ts) all use it. An address one of
 * them accepted and the mailer refused got as far as a FHIR create before it failed.
 *
 * One bare addr-spec (RFC 5322 section 3.4.1, dot-atom form, ASCII) of at most 254 characters
 * (RFC 5321 section 4.5.3.1.3, a path of 256 minus the angle brackets), domain labels of 1-63
 * letters, digits and inner hyphens (RFC 1035 section 2.3.1): no display name, no `<>`, no quotes
 * or comments, no whitespace, no `,`/`;` lists. Anything richer is refused rather than parsed,
 * because a parser that is more lenient than the check is how header injection happens.
 */

export const MAX_EMAIL_LENGTH = 254;
const MAX_LOCAL_PART_LENGTH = 64;

const LOCAL_PART = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*";
const DOMAIN_LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';

/** The regular expression as source text: also a FHIRPath `matches()` argument in the profiles. */
export const PLAIN_ADDRESS_SOURCE = `^(?=.{1,${MAX_EMAIL_LENGTH}}$)${LOCAL_PART}@${DOMAIN_LABEL}(?:\\.${DOMAIN_LABEL})+$`;

export const PLAIN_ADDRESS = new RegExp(PLAIN_ADDRESS_SOURCE);

/**
 * The address an account is created with (the provisioning DTOs, a raw create's `ff-email-2`): a
 * plain address whose local part is at most 64 characters too (RFC 5321 section 4.5.3.1.1: a mail
 * server may refuse a longer one, and the access-code mail would be lost; review F). Only where an
 * account is made: logins, resets and the mailer keep the rule above, so an account made before
 * the limit keeps working.
 */
export const NEW_ADDRESS_SOURCE = `^(?=[^@]{1,${MAX_LOCAL_PART_LENGTH}}@)${PLAIN_ADDRESS_SOURCE.slice(1)}`;

export const NEW_ADDRESS = new RegExp(NEW_ADDRESS_SOURCE);

/** True when `value` is exactly one plain address, as defined above. */
export function isPlainAddress(value: string): boolean {
  return PLAIN_ADDRESS.test(value);
}
