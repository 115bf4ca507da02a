import { describe, expect, it } from 'vitest';
import {
  compareHeaders,
  compareJson,
  createBindings,
  mailPattern,
  parseDocExamples,
  substitute,
} from '../helpers/docExamples.js';

/** The example checker must fail when an example stops being true, or the guide could drift silently. */

const fence = (lang: string, body: string) => `\`\`\`${lang}\n${body}\n\`\`\``;

describe('parsing the guide', () => {
  it('pairs a request with the json answer after "Response `NNN`"', () => {
    const md = [
      fence('http', 'POST /auth/login\nContent-Type: application/json\n\n{"email": "a@example.com"}'),
      'Response `200 OK`:',
      fence('json', '{"token_type": "Bearer"}'),
    ].join('\n\n');
    const [step] = parseDocExamples(md);
    expect(step).toMatchObject({
      kind: 'request',
      request: { method: 'POST', path: '/auth/login', headers: [['Content-Type', 'application/json']] },
      response: { status: 200, json: { token_type: 'Bearer' }, hasBody: true },
      repeat: 1,
      subset: false,
    });
  });

  it('reads an HTTP/1.1 answer with headers, a bodiless answer, and directives', () => {
    const md = [
      '<!-- doc-example repeat=4 -->',
      fence('http', 'POST /x'),
      fence('http', 'HTTP/1.1 429 Too Many Requests\nRetry-After: 60\n\n{"code": "rate_limited"}'),
      fence('http', 'POST /auth/logout'),
      'Response `204 No Content`.',
      fence('http', 'GET /openapi.json'),
      '<!-- doc-example subset -->',
      'Response `200 OK`:',
      fence('json', '{"openapi": "3.1.0"}'),
    ].join('\n\n');
    const steps = parseDocExamples(md);
    expect(steps).toMatchObject([
      {
        repeat: 4,
        response: { status: 429, headers: [['Retry-After', '60']], json: { code: 'rate_limited' } },
      },
      { request: { path: '/auth/logout' }, response: { status: 204, hasBody: false }, repeat: 1 },
      { subset: true, response: { status: 200 } },
    ]);
  });

  it('refuses a json block that answers nothing and a request without an answer', () => {
    expect(() => parseDocExamples(fence('json', '{"a": 1}'))).toThrow(/line 1: a json block must answer/);
    expect(() => parseDocExamples(`text\n\n${fence('http', 'GET /auth/me')}\n\nno answer`)).toThrow(
      /line 3: GET \/auth\/me has no answer/,
    );
  });

  it('reads claims and mail checks, and ignores other languages', () => {
    const md = [
      '<!-- doc-example claims=patient -->',
      fence('json', '{"role": "patient"}'),
      '<!-- doc-example mail=ann@example.com -->',
      fence('text', 'Subject: Hi'),
      fence('mermaid', 'sequenceDiagram'),
      fence('sh', 'curl -s http://localhost:3000/healthz'),
    ].join('\n\n');
    expect(parseDocExamples(md)).toMatchObject([
      { kind: 'claims', role: 'patient', json: { role: 'patient' } },
      { kind: 'mail', to: 'ann@example.com', text: 'Subject: Hi' },
    ]);
  });
});

describe('comparing a documented answer with the real one', () => {
  const user = { id: 'doc-user-1', role: 'patient', is_registered: true, profile: {} };

  it('accepts the documented shape with generated values of the same type', () => {
    const b = createBindings();
    expect(
      compareJson({ user, expires_in: 900 }, { user: { ...user, id: 'real-9' }, expires_in: 900 }, b),
    ).toEqual([]);
    expect(b.values.get('doc-user-1')).toBe('real-9');
  });

  it('fails on a changed stable value, a missing key, an undocumented key, and a changed type', () => {
    const b = createBindings();
    expect(compareJson({ role: 'patient' }, { role: 'admin' }, b)).toEqual([
      'role: documented "patient", got "admin"',
    ]);
    expect(compareJson({ role: 'patient', message: 'x' }, { role: 'patient' }, b)).toEqual([
      'message: documented but missing in the response',
    ]);
    expect(compareJson({ role: 'patient' }, { role: 'patient', secret: 'h' }, b)[0]).toMatch(
      /^secret: in the response but not in the example/,
    );
    expect(compareJson({ fhir_id: 'abc' }, { fhir_id: null }, b)[0]).toMatch(
      /documented string "abc", got null/,
    );
    expect(compareJson({ is_registered: true }, { is_registered: false }, b)).toHaveLength(1);
    expect(compareJson({ expires_in: 900 }, { expires_in: 3600 }, b)).toHaveLength(1);
  });

  it('checks array lengths, or only the documented items in subset mode', () => {
    const b = createBindings();
    expect(
      compareJson({ errors: [{ path: 'role' }] }, { errors: [{ path: 'role' }, { path: 'x' }] }, b),
    ).toEqual(['errors: documented 1 item(s), got 2']);
    expect(
      compareJson({ format: ['json'] }, { format: ['json', 'xml'], extra: 1 }, b, { subset: true }),
    ).toEqual([]);
  });

  it('holds a documented id to the record it first stood for', () => {
    const b = createBindings();
    expect(compareJson({ user_id: 'doc-ann' }, { user_id: 'real-ann' }, b)).toEqual([]);
    expect(compareJson({ target: { user_id: 'doc-ann' } }, { target: { user_id: 'real-bo' } }, b)[0]).toMatch(
      /reuses doc-ann, which stood for real-ann earlier, but got real-bo/,
    );
    // stable strings are compared after filling in bound ids
    expect(compareJson({ fhirUser: 'Patient/doc-ann' }, { fhirUser: 'Patient/real-ann' }, b)).toEqual([]);
    expect(substitute(b, 'GET /admin/users/doc-ann')).toBe('GET /admin/users/real-ann');
  });

  it('compares documented headers, variable ones by form only', () => {
    const b = createBindings();
    const real = new Headers({ 'retry-after': '3412', 'content-type': 'application/problem+json' });
    expect(compareHeaders([['Retry-After', '3600']], real, b)).toEqual([]);
    expect(compareHeaders([['Content-Type', 'application/json']], real, b)).toHaveLength(1);
    expect(compareHeaders([['ETag', 'W/"1"']], real, b)).toEqual(['header ETag: documented but missing']);
  });

  it('matches a documented mail with any code and expiry time, but not other wording', () => {
    const pattern = mailPattern(
      'Subject: Code\n\n    7KQ2-M9XD-4HTP-R3VW\n\nexpires on 2026-11-25 14:03 UTC (in 24 hours)',
    );
    expect(
      'Subject: Code\n\n    ABCD-EFGH-JKMN-PQRS\n\nexpires on 2027-01-02 09:15 UTC (in 24 hours)',
    ).toMatch(pattern);
    expect(
      'Subject: Code\n\n    ABCD-EFGH-JKMN-PQRS\n\nexpires on 2027-01-02 09:15 UTC (in 12 hours)',
    ).not.toMatch(pattern);
  });
});
