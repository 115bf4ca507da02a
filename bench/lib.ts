import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Pool } from 'undici';

/** Shared by the benchmarks: HTTP calls with a keep-alive pool, closed-loop measurement, processes. */

const ROOT = path.resolve(import.meta.dirname, '..');

/** The admin every bench's gateway creates at start (ADMIN_EMAIL / ADMIN_PASSWORD). */
export const BENCH_ADMIN = { email: 'bench-admin@example.com', password: 'benchmark admin passphrase' };

/** The environment of a gateway under a bench: in front of `upstreamUrl`, on its own DATA_DIR, with the bench admin. */
export function gatewayEnv(options: {
  port: number;
  dataDir: string;
  upstreamUrl: string;
  workers: number;
}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PORT: String(options.port),
    PUBLIC_BASE_URL: 'http://gateway.bench',
    DATA_DIR: options.dataDir,
    FHIR_BASE_URL: `${options.upstreamUrl}/fhir`,
    ADMIN_EMAIL: BENCH_ADMIN.email,
    ADMIN_PASSWORD: BENCH_ADMIN.password,
    WORKERS: String(options.workers),
  };
}

/** A bench server of ours (plain JS) started from the project root; resolves with the port its ready line names. */
export function spawnReady(
  cmd: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(cmd, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (chunk) => {
      out += chunk;
      const line = out.split('\n').find((l) => l.includes('"ready":true'));
      if (line) resolve({ child, port: (JSON.parse(line) as { port: number }).port });
    });
    child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited ${code}`)));
  });
}

const CLOCK_TICKS_PER_SECOND = 100;

/** utime+stime of the processes (or one thread: `pid/task/tid`), in microseconds. */
export function cpuMicros(paths: string[]): number {
  let ticks = 0;
  for (const p of paths) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // exited
    }
  }
  return (ticks * 1_000_000) / CLOCK_TICKS_PER_SECOND;
}

/**
 * The machine's CPU time so far from /proc/stat's first line (all CPUs), in clock ticks: all of it
 * (user to steal; guest time is in user already), and the idle part (idle and iowait). Time stolen
 * by the hypervisor counts as busy; under a cpuset the line still counts every CPU of the machine.
 */
export function machineTicks(stat = fs.readFileSync('/proc/stat', 'utf8')): { total: number; idle: number } {
  const fields = (stat.split('\n')[0] ?? '').trim().split(/\s+/).slice(1, 9).map(Number);
  const [, , , idle = 0, iowait = 0] = fields;
  return { total: fields.reduce((sum, ticks) => sum + ticks, 0), idle: idle + iowait };
}

/** How many of the machine's cores were busy, on average, between two readings of machineTicks. */
export function busyCores(
  before: { total: number; idle: number },
  after: { total: number; idle: number },
  cores: number,
): number {
  const total = after.total - before.total;
  return total > 0 ? Math.round(((total - (after.idle - before.idle)) / total) * cores * 100) / 100 : 0;
}

export interface Caller {
  call(
    method: string,
    url: string,
    token?: string,
    body?: unknown,
    // biome-ignore lint/suspicious/noExplicitAny: benchmark answers are read ad hoc
  ): Promise<{ status: number; json: () => any }>;
  close(): Promise<void>;
}

export function caller(base: string, connections: number): Caller {
  const pool = new Pool(base, { connections });
  return {
    call: async (method, url, token, body) => {
      const response = await pool.request({
        method: method as 'GET',
        path: url,
        headers: {
          'content-type': 'application/json',
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      const text = await response.body.text();
      return { status: response.statusCode, json: () => JSON.parse(text) };
    },
    close: () => pool.close(),
  };
}

export async function waitFor(
  check: () => Promise<boolean>,
  what: string,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const median = (values: readonly number[]): number =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;

export function percentile(sorted: number[], p: number): number {
  return (
    Math.round((sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0) * 100) / 100
  );
}

export interface Measured {
  name: string;
  requests: number;
  failures: number;
  rps: number;
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
}

/** Closed loop: `concurrency` workers send `total` requests back to back. */
export async function measure(
  name: string,
  request: () => Promise<{ status: number }>,
  total: number,
  concurrency: number,
): Promise<Measured> {
  const latencies: number[] = [];
  let next = 0;
  let failures = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < total) {
        const t = performance.now();
        const { status } = await request();
        latencies.push(performance.now() - t);
        if (status >= 400) failures++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    name,
    requests: latencies.length,
    failures,
    rps: Math.round(latencies.length / seconds),
    p50_ms: percentile(latencies, 50),
    p95_ms: percentile(latencies, 95),
    p99_ms: percentile(latencies, 99),
  };
}

export function rssMiB(pids: number | readonly number[]): number {
  let kib = 0;
  for (const pid of typeof pids === 'number' ? [pids] : pids) {
    try {
      kib += Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      // exited
    }
  }
  return Math.round(kib / 1024);
}

const PAGE_BYTES = 4096;
/** Pagemap entries read at a time (8 bytes each): V8 reserves gigabytes it never touches. */
const PAGEMAP_CHUNK = 65_536;
/** In an entry's upper 32 bits: the page is present (bit 63), and the frame number's top (bits 32-54). */
const PRESENT = 0x8000_0000;
const FRAME_HIGH = 0x7f_ffff;

/** A process that exited while it was read: it holds no memory any more. */
const exited = (error: unknown) => ['ENOENT', 'ESRCH'].includes((error as NodeJS.ErrnoException).code ?? '');

/**
 * The resident memory of processes with every physical page counted once. Summed RSS counts a
 * page each process maps, so a tree of four Node processes counts the Node binary's ~43 MiB of
 * code four times. From /proc/<pid>/pagemap's page frame numbers, which Linux shows only to a
 * process with CAP_SYS_ADMIN: undefined without them, or when a process cannot be read.
 */
export function uniqueResidentMiB(pids: readonly number[]): number | undefined {
  const frames = new Set<number>();
  const entries = Buffer.alloc(PAGEMAP_CHUNK * 8);
  for (const pid of pids) {
    let maps: string;
    let pagemap: number;
    try {
      maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
      pagemap = fs.openSync(`/proc/${pid}/pagemap`, 'r');
    } catch (error) {
      if (exited(error)) continue;
      return undefined;
    }
    try {
      for (const range of maps.matchAll(/^(?<from>[0-9a-f]+)-(?<to>[0-9a-f]+) /gm)) {
        const end = Number.parseInt(range.groups?.to ?? '0', 16) / PAGE_BYTES;
        let page = Number.parseInt(range.groups?.from ?? '0', 16) / PAGE_BYTES;
        while (page < end) {
          let read: number;
          try {
            read = fs.readSync(pagemap, entries, 0, Math.min(PAGEMAP_CHUNK, end - page) * 8, page * 8);
          } catch {
            break; // [vsyscall] and the like
          }
          if (read < 8) break;
          for (let i = 0; i < Math.floor(read / 8); i++) {
            const high = entries.readUInt32LE(i * 8 + 4);
            if (!(high & PRESENT)) continue;
            // a frame number fits a double exactly below 2^53 pages (32 EiB)
            const frame = (high & FRAME_HIGH) * 2 ** 32 + entries.readUInt32LE(i * 8);
            if (frame === 0) return undefined; // frame numbers hidden: not privileged
            frames.add(frame);
          }
          page += Math.floor(read / 8);
        }
      }
    } finally {
      fs.closeSync(pagemap);
    }
  }
  return Math.round((frames.size * PAGE_BYTES) / 1024 / 1024);
}

/** A TypeScript entry point of ours as its own process (the way `npm start` runs it). */
export function startNode(
  entry: string,
  env: Record<string, string>,
  stdout: 'ignore' | 'pipe' = 'ignore',
): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', entry], {
    env: { ...process.env, ...env },
    stdio: ['ignore', stdout, 'inherit'],
  });
}

/**
 * An access code: four groups of four Crockford base32 characters, standing alone. Without the
 * word boundaries a Message-ID such as `<dead2065-6870-2616-7067-...>` matched first, and the
 * account's sign-up failed.
 */
const ACCESS_CODE =
  /\b[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}\b/;

/** The access code in the newest mail to `email` in the file outbox. */
export function codeFromMail(dataDir: string, email: string): string {
  const mailDir = `${dataDir}/mail`;
  const mail = fs.existsSync(mailDir)
    ? fs
        .readdirSync(mailDir)
        .map((f) => fs.readFileSync(`${mailDir}/${f}`, 'utf8'))
        .filter((m) => m.includes(email))
        .pop()
    : undefined;
  const code = mail ? ACCESS_CODE.exec(mail)?.[0] : undefined;
  if (!code) throw new Error(`no access code mailed to ${email}`);
  return code;
}

/** codeFromMail, waiting up to `timeoutMs` for the mail lane to deliver. */
export async function awaitCode(dataDir: string, email: string, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return codeFromMail(dataDir, email);
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
