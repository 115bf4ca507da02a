import fs from 'node:fs';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Bindings,
  CODE_IN_TEXT,
  compareHeaders,
  compareJson,
  createBindings,
  type DocStep,
  mailPattern,
  parseDocExamples,
  substitute,
} from '../helpers/docExamples.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { codeIn } from '../helpers/journey.js';
import { type SmtpCapture, startSmtpCapture } from '../helpers/smtp.js';

/**
 * Runs every request of docs/auth_integration.md, in document order, against a real gateway
 * (SQLite, embedded FHIR server, a real SMTP listener) and checks each documented answer:
 * status, documented headers, and the JSON's shape and stable values. Ids, tokens and codes in
 * later requests are the real ones from earlier answers and mails.
 */

const GUIDE = 'docs/auth_integration.md';
const steps = parseDocExamples(fs.readFileSync(GUIDE, 'utf8'));

type RequestStep = Extract<DocStep, { kind: 'request' }>;

const ROLE_TOKEN = /<(admin|patient|practitioner) token>/g;
/** `eyJhbGciOiJFUzI1NiIs...`: the newest token any example received. */
const ABBREVIATED_TOKEN = /\beyJ[A-Za-z0-9_-]*\.\.\./g;

function label(step: DocStep): string {
  switch (step.kind) {
    case 'request':
      return `line ${step.line}: ${step.request.method} ${step.request.path} -> ${step.response.status}`;
    case 'claims':
      return `line ${step.line}: the claims of a ${step.role} token`;
    case 'mail':
      return `line ${step.line}: the mail to ${step.to}`;
  }
}

describe(`${GUIDE}: every example is true`, () => {
  let gw: TestGateway;
  let smtp: SmtpCapture;
  const bindings: Bindings = createBindings();
  const roleTokens = new Map<string, string>();
  let newestToken: string | undefined;
  let broken: string | undefined;

  beforeAll(async () => {
    smtp = await startSmtpCapture();
    gw = await startTestGateway({
      env: {
        // the guide's own base URL and CORS origin, so links, issuer and CORS headers read as documented
        PUBLIC_BASE_URL: 'http://localhost:3000',
        CORS_ORIGINS: 'https://app.example.com',
        SMTP_URL: smtp.url,
      },
    });
  });
  afterAll(async () => {
    await gw?.close();
    await smtp?.close();
  });

  /** Every queued mail handed to the SMTP listener: background work done, outbox empty. */
  async function settleMail(): Promise<void> {
    await gw.deps.background.drain();
    const deadline = Date.now() + 10_000;
    for (;;) {
      const row = await gw.deps.db
        .selectFrom('outbox')
        .select((eb) => eb.fn.countAll().as('n'))
        .where('kind', '=', 'email')
        .where('status', 'in', ['pending', 'sending'])
        .executeTakeFirstOrThrow();
      if (Number(row.n) === 0) return;
      if (Date.now() > deadline) throw new Error('mail still queued after 10 s');
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  async function newestMailTo(email: string) {
    await settleMail();
    const mail = smtp.messages.filter((m) => JSON.stringify(m.to ?? '').includes(email)).at(-1);
    if (!mail) throw new Error(`no mail to ${email} was sent`);
    return mail;
  }

  function fillTokens(text: string): string {
    return text
      .replace(ROLE_TOKEN, (_, role: string) => {
        const token = roleTokens.get(role);
        if (!token) throw new Error(`no live ${role} token at this point of the guide: log one in first`);
        return token;
      })
      .replace(ABBREVIATED_TOKEN, () => {
        if (!newestToken) throw new Error('no token at this point of the guide');
        return newestToken;
      });
  }

  /** Codes in a request body are the newest one mailed to that body's `email`. */
  async function fillCodes(body: string): Promise<string> {
    if (!CODE_IN_TEXT.test(body)) return body;
    const email = (JSON.parse(body) as { email?: unknown }).email;
    if (typeof email !== 'string') throw new Error('a code in a request body needs an "email" beside it');
    const code = codeIn(await newestMailTo(email));
    return body.replace(new RegExp(CODE_IN_TEXT.source, 'g'), code);
  }

  async function send(step: RequestStep): Promise<{ response: Response; token: string | undefined }> {
    const { request } = step;
    const path = substitute(bindings, fillTokens(request.path));
    const headers = new Headers();
    let token: string | undefined;
    for (const [name, value] of request.headers) {
      const filled = substitute(bindings, fillTokens(value));
      if (name.toLowerCase() === 'authorization') token = filled.replace(/^Bearer /, '');
      headers.set(name, filled);
    }
    const body =
      request.body === undefined
        ? undefined
        : await fillCodes(substitute(bindings, fillTokens(request.body)));
    let response: Response | undefined;
    for (let i = 0; i < step.repeat; i++) {
      if (response) await response.arrayBuffer();
      response = await fetch(`${gw.url}${path}`, { method: request.method, headers, body });
    }
    return { response: response!, token };
  }

  async function runRequest(step: RequestStep): Promise<void> {
    const { response, token } = await send(step);
    const text = await response.text();
    const problems: string[] = [];
    if (response.status !== step.response.status) {
      problems.push(
        `status: documented ${step.response.status}, got ${response.status} ${text.slice(0, 300)}`,
      );
    }
    const contentType = response.headers.get('content-type') ?? '';
    let json: unknown;
    if (/json/.test(contentType) && text !== '') json = JSON.parse(text);
    if (step.response.hasBody) {
      if (json === undefined) problems.push(`body: documented JSON, got ${contentType || 'no body'}`);
      else problems.push(...compareJson(step.response.json, json, bindings, { subset: step.subset }));
    } else if (json !== undefined) {
      problems.push(`body: the example shows none, got ${text.slice(0, 200)}`);
    }
    problems.push(...compareHeaders(step.response.headers, response.headers, bindings));
    if (problems.length > 0) throw new Error(`${label(step)}\n  ${problems.join('\n  ')}`);

    // remember who holds which token, for <role token> in later requests
    const answer = json as { token?: unknown; user?: { role?: unknown } } | undefined;
    if (typeof answer?.token === 'string' && typeof answer.user?.role === 'string') {
      roleTokens.set(answer.user.role, answer.token);
      newestToken = answer.token;
    }
    if (step.request.method === 'POST' && step.request.path === '/auth/logout' && response.status === 204) {
      for (const [role, held] of roleTokens) if (held === token) roleTokens.delete(role);
    }
  }

  function checkClaims(step: Extract<DocStep, { kind: 'claims' }>): void {
    const token = roleTokens.get(step.role);
    if (!token) throw new Error(`${label(step)}: no ${step.role} token at this point of the guide`);
    const problems = compareJson(step.json, decodeJwt(token), bindings);
    if (problems.length > 0) throw new Error(`${label(step)}\n  ${problems.join('\n  ')}`);
  }

  async function checkMail(step: Extract<DocStep, { kind: 'mail' }>): Promise<void> {
    const mail = await newestMailTo(step.to);
    const real = `Subject: ${mail.subject ?? ''}\n\n${mail.text ?? ''}`
      .replace(/\r\n/g, '\n')
      .split('\n')
      .map((l) => l.trimEnd())
      .join('\n')
      .trim();
    expect(real, label(step)).toMatch(mailPattern(step.text));
  }

  it('finds the examples', () => {
    expect(steps.filter((s) => s.kind === 'request').length).toBeGreaterThan(30);
  });

  for (const step of steps) {
    it(label(step), async (ctx) => {
      // later examples build on earlier ones: after the first failure they would only fail confusingly
      if (broken) ctx.skip(`skipped: ${broken} failed first`);
      try {
        if (step.kind === 'request') await runRequest(step);
        else if (step.kind === 'claims') checkClaims(step);
        else await checkMail(step);
      } catch (error) {
        // claims and mail checks change nothing; a failed request may leave later ones without their ids
        if (step.kind === 'request') broken = label(step);
        throw error;
      }
    });
  }
});
