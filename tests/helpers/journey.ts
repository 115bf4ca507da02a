import type { ParsedMail } from 'mailparser';
import type { TestGateway } from './gateway.js';
import type { SmtpCapture } from './smtp.js';

/** Codes as mailed: XXXX-XXXX-XXXX-XXXX in Crockford base32. */
export const CODE_PATTERN =
  /\b[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}\b/;

/** Waits until `count` mails to `email` arrived, and returns them in arrival order. */
export async function mailsTo(
  smtp: SmtpCapture,
  email: string,
  count = 1,
  timeoutMs = 5_000,
): Promise<ParsedMail[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = smtp.messages.filter((m) => JSON.stringify(m.to ?? '').includes(email));
    if (found.length >= count) return found;
    if (Date.now() > deadline) throw new Error(`expected ${count} mail(s) to ${email}, got ${found.length}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function codeIn(mail: ParsedMail): string {
  const code = CODE_PATTERN.exec(mail.text ?? '')?.[0];
  if (!code) throw new Error('no code in the mail');
  return code;
}

export interface Provisioned {
  readonly email: string;
  readonly fhirId: string;
  readonly userId: string;
  readonly code: string;
}

/** The admin half of the journey: create a patient (or practitioner) and read the code from the mail. */
export async function provision(
  gw: TestGateway,
  smtp: SmtpCapture,
  email: string,
  role: 'patient' | 'practitioner' = 'patient',
): Promise<Provisioned> {
  const body =
    role === 'patient' ? { name: 'Pat Journey', email, dob: '1985-06-15' } : { name: 'Dr Journey', email };
  const response = await gw.call(`/fhir/${role}`, {
    method: 'POST',
    token: await gw.adminToken(),
    json: body,
  });
  if (response.status !== 201)
    throw new Error(`provisioning failed: ${response.status} ${await response.text()}`);
  const { fhir_id, user_id } = (await response.json()) as { fhir_id: string; user_id: string };
  const [mail] = await mailsTo(smtp, email);
  return { email, fhirId: fhir_id, userId: user_id, code: codeIn(mail!) };
}

export async function signup(
  gw: TestGateway,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
) {
  return gw.call('/auth/signup', { method: 'POST', json: body, headers });
}

/** A patient assigned to a practitioner, both signed in: their FHIR ids and access tokens. */
export interface SignedInPair {
  readonly ids: { readonly me: string; readonly gp: string };
  readonly tokens: { readonly patient: string; readonly gp: string };
}

/** Makes a Practitioner and a Patient assigned to them on the FHIR server, with an account each, signed in. */
export async function signedInPair(gw: TestGateway): Promise<SignedInPair> {
  const gpId = (await gw.deps.fhir.create('Practitioner', { resourceType: 'Practitioner' })).id;
  const patient = {
    resourceType: 'Patient' as const,
    generalPractitioner: [{ reference: `Practitioner/${gpId}` }],
  };
  const meId = (await gw.deps.fhir.create('Patient', patient)).id;
  const me = await gw.seedUser({ role: 'patient', fhirId: meId });
  const gp = await gw.seedUser({ role: 'practitioner', fhirId: gpId });
  return {
    ids: { me: meId, gp: gpId },
    tokens: { patient: await gw.login(me.email, me.password), gp: await gw.login(gp.email, gp.password) },
  };
}
