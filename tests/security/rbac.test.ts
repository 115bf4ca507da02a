import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Role } from '../../db/schema.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { PROTECTED_ROUTES } from './routeMatrix.js';

type Caller = 'anonymous' | Role;
const CALLERS: readonly Caller[] = ['anonymous', 'patient', 'practitioner', 'admin'];

describe('RBAC matrix', () => {
  let gw: TestGateway;
  const tokens = new Map<Caller, string>();
  const credentials = new Map<Caller, { email: string; password: string }>();

  beforeAll(async () => {
    gw = await startTestGateway();
    tokens.set('admin', await gw.adminToken());
    credentials.set('admin', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
    for (const role of ['patient', 'practitioner'] as const) {
      const user = await gw.seedUser({ role });
      credentials.set(role, user);
      tokens.set(role, await gw.login(user.email, user.password));
    }
  });
  afterAll(() => gw.close());

  it('lists every route that requires a bearer token in the matrix', async () => {
    const doc = (await (await gw.call('/openapi.json')).json()) as {
      paths: Record<string, Record<string, { security?: unknown[] }>>;
    };
    const served = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.entries(ops)
        .filter(([, op]) => (op.security?.length ?? 0) > 0)
        .map(([method]) => `${method.toUpperCase()} ${path}`),
    );
    const listed = PROTECTED_ROUTES.filter((r) => r.documented !== false).map((r) => `${r.method} ${r.path}`);
    expect(served.sort()).toEqual(listed.sort());
  });

  for (const route of PROTECTED_ROUTES) {
    for (const caller of CALLERS) {
      const expected = caller === 'anonymous' ? 401 : route.allowed.includes(caller) ? 'allowed' : 403;
      it(`${route.method} ${route.path} as ${caller} -> ${expected}`, async () => {
        const login = credentials.get(caller);
        const token =
          route.sample?.freshLogin && login
            ? await gw.login(login.email, login.password)
            : tokens.get(caller);
        const response = await gw.call(route.sample?.path ?? route.path, {
          method: route.method,
          ...(token ? { token } : {}),
          ...(route.sample?.json !== undefined ? { json: route.sample.json } : {}),
        });
        if (expected === 'allowed') expect([401, 403]).not.toContain(response.status);
        else expect(response.status).toBe(expected);
        expect(response.status).toBeLessThan(500);
      });
    }
  }
});
