import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freeLoopbackPort } from '../../src/cluster.js';

/**
 * Real processes for the tests where a process boundary matters: the gateway started the way
 * it is deployed (`npm start`, a fresh process), a FHIR server started on its own
 * (`npm run fhir`), crashes by SIGKILL. Each runs in its own process group so a kill reaches
 * npm, tsx and node alike.
 */

const ROOT = path.resolve(import.meta.dirname, '../..');

export interface RunningProcess {
  readonly child: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves when the process has exited (with its code, or null after a signal). */
  readonly exited: Promise<number | null>;
  /** Signals the whole process group; resolves once it has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export function runNpm(args: readonly string[], env: Record<string, string>): RunningProcess {
  const child = spawn('npm', ['run', '-s', ...args], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  child.stdout?.on('data', (chunk) => {
    output += chunk;
  });
  child.stderr?.on('data', (chunk) => {
    output += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    output: () => output,
    exited,
    kill: async (signal = 'SIGKILL') => {
      try {
        if (child.pid) process.kill(-child.pid, signal);
      } catch {
        // already gone
      }
      await exited;
    },
  };
}

/** A free port on loopback (the OS picks; a race with another process is unlikely on a test machine). */
export const freePort = freeLoopbackPort;

/** Polls until `check` resolves truthy, or throws after `timeoutMs` with the process output for context. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs = 30_000,
  proc?: RunningProcess,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const result = await check();
      if (result) return result;
    } catch {
      // not yet
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what}${proc ? `\n--- output ---\n${proc.output().slice(-4000)}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts the embedded FHIR server alone (`npm run fhir`) and resolves its base URL. */
export async function startStandaloneFhir(
  dataDir: string,
): Promise<{ proc: RunningProcess; baseUrl: string }> {
  const port = await freePort();
  const proc = runNpm(['fhir'], { FHIR_EMBEDDED_PORT: String(port), DATA_DIR: dataDir, HOST: '127.0.0.1' });
  const baseUrl = await waitFor(
    'the standalone FHIR server',
    async () => /"baseUrl":"([^"]+)"/.exec(proc.output())?.[1],
    30_000,
    proc,
  );
  return { proc, baseUrl };
}

/**
 * Whether a process of the group `pgid` (npm and everything it started) holds the socket listening
 * on 127.0.0.1:`port`. Reads Linux's /proc; elsewhere it cannot tell and says yes.
 */
function listensOn(pgid: number, port: number): boolean {
  let table: string;
  try {
    table = fs.readFileSync('/proc/net/tcp', 'utf8');
  } catch {
    return true;
  }
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const sockets = new Set(
    table
      .split('\n')
      .map((line) => line.trim().split(/\s+/))
      .filter((fields) => fields[1] === local && fields[3] === '0A')
      .map((fields) => `socket:[${fields[9]}]`),
  );
  for (const pid of fs.readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]) !== pgid) continue;
      for (const fd of fs.readdirSync(`/proc/${pid}/fd`))
        if (sockets.has(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))) return true;
    } catch {
      // exited meanwhile
    }
  }
  return false;
}

/**
 * Starts the gateway with `npm start` in a fresh process and waits until /readyz says ready.
 * Give the same `port` to restart "the same" gateway: its public URL (token issuer, account
 * identifiers) must not change between restarts.
 */
export async function startGatewayProcess(
  env: Record<string, string>,
  port?: number,
): Promise<{ proc: RunningProcess; url: string; port: number }> {
  for (let attempt = 1; ; attempt++) {
    const listenPort = port ?? (await freePort());
    const url = `http://127.0.0.1:${listenPort}`;
    const proc = runNpm(['start'], {
      PORT: String(listenPort),
      HOST: '127.0.0.1',
      PUBLIC_BASE_URL: url,
      ...env,
    });
    // the listener must be our own: between freePort() and its listen another test's gateway can
    // take the port, and that one's /readyz would answer 200 for us
    const state = await waitFor(
      'the gateway to be ready',
      async () => {
        if (proc.child.exitCode !== null) return 'exited';
        if ((await fetch(`${url}/readyz`)).status !== 200) return false;
        return listensOn(proc.child.pid as number, listenPort) ? 'ready' : false;
      },
      60_000,
      proc,
    ).catch(async (error: unknown) => {
      // a gateway that never got ready is no one's to stop afterwards: it would outlive the test
      await proc.kill('SIGKILL');
      throw error;
    });
    if (state === 'ready') return { proc, url, port: listenPort };
    // a port taken meanwhile: try another, unless the caller needs this one (a restart keeps its URL)
    if (port === undefined && attempt < 3 && proc.output().includes('EADDRINUSE')) continue;
    throw new Error(`the gateway exited before it was ready\n--- output ---\n${proc.output().slice(-4000)}`);
  }
}

/** The pids of the gateway's node processes: npm's child (the primary) and its workers. */
export function nodeProcessesUnder(pid: number): number[] {
  const children = (parent: number): number[] => {
    try {
      return execFileSync('pgrep', ['-P', String(parent)], { encoding: 'utf8' })
        .split('\n')
        .filter(Boolean)
        .map(Number);
    } catch {
      return [];
    }
  };
  const all: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const child of children(queue.shift() as number)) {
      all.push(child);
      queue.push(child);
    }
  }
  return all.filter((p) => {
    try {
      return fs.readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'node';
    } catch {
      return false;
    }
  });
}

/** True while a process of that id exists (signal 0 tests without signalling). */
export function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
