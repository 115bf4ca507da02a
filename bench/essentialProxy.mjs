// The floor of the gateway's own work, for `npm run bench`: what any gateway with the same job
// must do per request, and nothing else. It is not a gateway (no routing, logging, audit, cursors,
// search policy or error handling) and answers only the bench's two requests. Per request: the
// caller's token from a map of tokens already verified (the gateway's cache hit), the caller's
// account and session from the gateway's own SQLite file (the same query, through a prepared
// statement), the upstream request narrowed to the caller (undici, keep-alive), JSON.parse of the
// whole answer, a check of every entry against the caller's patient, the upstream base replaced,
// and the answer written. Plain JS: no loader cost.
import http from 'node:http';
import Database from 'better-sqlite3';
import { Pool } from 'undici';

const upstreamBase = process.env.FHIR_BASE_URL; // http://127.0.0.1:<port>/fhir
const publicBase = `${process.env.PUBLIC_BASE_URL}/fhir`;
const upstream = new URL(upstreamBase);
const pool = new Pool(upstream.origin, { connections: 32 });
const db = new Database(process.env.DATABASE_FILE, { readonly: true, fileMustExist: true });
const callerQuery = db.prepare(
  `select u.id, u.role, u.fhir_resource_id, u.is_active, u.is_registered, u.token_version,
     s.user_id as session_user_id, s.revoked_at as session_revoked_at, s.expires_at as session_expires_at
   from users u left join sessions s on s.id = ? where u.id = ?`,
);
// the gateway verifies a token's signature once and keeps it; a cache hit is a map lookup
const verified = new Map();
function claimsOf(token) {
  let claims = verified.get(token);
  if (!claims) {
    claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'));
    verified.set(token, claims);
  }
  return claims;
}

function callerOf(req) {
  const token = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
  if (!token) return undefined;
  const claims = claimsOf(token);
  const row = callerQuery.get(claims.sid, claims.sub);
  const live =
    row?.is_active === 1 &&
    row.token_version === claims.ver &&
    row.session_user_id === claims.sub &&
    !row.session_revoked_at &&
    row.session_expires_at > new Date().toISOString();
  return live ? row : undefined;
}

/** Every entry must be the caller's: a resource naming another patient refuses the answer. */
function inScope(body, patientId) {
  if (body.resourceType === 'Patient') return body.id === patientId;
  if (body.resourceType !== 'Bundle') return false;
  return (body.entry ?? []).every((e) => e.resource?.subject?.reference === `Patient/${patientId}`);
}

http
  .createServer(async (req, res) => {
    const caller = callerOf(req);
    if (!caller?.fhir_resource_id) return res.writeHead(401).end();
    const path = req.url.slice('/fhir'.length);
    // a search is narrowed to the caller's patient
    const narrowed = path.includes('?') ? `${path}&subject=Patient/${caller.fhir_resource_id}` : path;
    try {
      const answer = await pool.request({
        method: 'GET',
        path: `${upstream.pathname}${narrowed}`,
        headers: { accept: 'application/fhir+json' },
      });
      const text = await answer.body.text();
      if (answer.statusCode !== 200 || !inScope(JSON.parse(text), caller.fhir_resource_id))
        return res.writeHead(502).end();
      res.writeHead(200, {
        'content-type': 'application/fhir+json; charset=utf-8',
        'cache-control': 'no-store',
      });
      res.end(text.replaceAll(upstreamBase, publicBase));
    } catch {
      res.writeHead(502).end();
    }
  })
  .listen(0, '127.0.0.1', function () {
    console.log(JSON.stringify({ ready: true, port: this.address().port }));
  });
process.on('SIGTERM', () => process.exit(0));
