import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { freePort, isAlive } from './processes.js';

/**
 * The third upstream tier: a real HAPI FHIR R4 JPA server (tests/hapi-server, H2 in memory),
 * built with Maven when its jar is missing or older than its sources, booted once per
 * `npm test` run and shared by every test file through vitest's `provide`/`inject`
 * (`hapiRealBaseUrl`, read in gateway.ts). Without Java 17+ or Maven, or with `SKIP_HAPI=1`,
 * the tier is skipped with one `[tests]` line; with them, a failed build or boot fails the run.
 */

declare module 'vitest' {
  export interface ProvidedContext {
    /** The real HAPI FHIR server's base, `http://127.0.0.1:N/fhir`; absent when the tier is skipped. */
    hapiRealBaseUrl: string | undefined;
  }
}

const MODULE_DIR = path.resolve(import.meta.dirname, '../hapi-server');
const JAR = path.join(MODULE_DIR, 'target/hapi-server.jar');
/** C1 only and the serial collector: boots in ~20-30 s instead of ~40 s on two cores; plenty fast for tests. */
const JVM_FLAGS = ['-XX:TieredStopAtLevel=1', '-XX:+UseSerialGC'];
const BOOT_TIMEOUT_MS = 180_000;
/** A cold build downloads ~250 MB into ~/.m2 (87-120 s measured); a warm one takes 10-20 s. */
const BUILD_TIMEOUT_MS = 600_000;

let server: { child: ChildProcess; exited: Promise<number | null>; log: string } | undefined;

export async function setup(project: TestProject): Promise<void> {
  const skipped = whySkipped() ?? noSelectedFileNeedsIt(project);
  if (skipped) {
    console.log(`[tests] real HAPI FHIR tier skipped: ${skipped}`);
    return;
  }
  const built = await buildIfStale();
  const started = await boot();
  server = started;
  console.log(
    `[tests] real HAPI FHIR tier: ${started.baseUrl} (${built}; boot ${(started.bootMs / 1000).toFixed(1)} s, log ${started.log})`,
  );
  project.provide('hapiRealBaseUrl', started.baseUrl);
}

export async function teardown(): Promise<void> {
  if (!server) return;
  const { child, exited, log } = server;
  server = undefined;
  const died = child.exitCode !== null || child.signalCode !== null;
  if (!died) {
    child.kill('SIGTERM');
    const stopped = await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)]);
    if (!stopped) child.kill('SIGKILL');
    await exited;
  }
  // the open stdin pipe would otherwise keep vitest's process from exiting
  child.stdin?.destroy();
  if (!died) fs.rmSync(log, { force: true });
}

/** Why the tier cannot run here, or undefined when it can. */
function whySkipped(): string | undefined {
  const skip = process.env.SKIP_HAPI;
  if (skip && skip !== '0' && skip !== 'false') return `SKIP_HAPI=${skip}`;
  const version = spawnSync(javaCommand(), ['-version'], { encoding: 'utf8' });
  if (version.error) return `no java (${javaCommand()}) on PATH; install a JDK 17+ to run it`;
  const major = Number(/version "(?:1\.)?(\d+)/.exec(version.stderr)?.[1] ?? Number.NaN);
  // a java that cannot say its version is broken, not absent: fail rather than skip
  if (Number.isNaN(major))
    throw new Error(
      `[tests] real HAPI FHIR tier: \`${javaCommand()} -version\` failed.\n${tail(version.stderr)}`,
    );
  if (major < 17) return `java ${major} is older than the 17 HAPI FHIR 8 needs`;
  if (spawnSync('mvn', ['-v'], { encoding: 'utf8' }).error) return 'no mvn (Maven) on PATH';
  return undefined;
}

/**
 * `npx vitest run tests/auth` should not wait half a minute for a server none of its files use:
 * the tier is for the files that run on every upstream flavour (they import UPSTREAMS). The CLI
 * filters are read from an internal field; without it the server is always started.
 */
function noSelectedFileNeedsIt(project: TestProject): string | undefined {
  const filters = (project.vitest as unknown as { filenamePattern?: string[] }).filenamePattern;
  if (!filters?.length) return undefined;
  const root = project.config.root;
  const users = fs
    .readdirSync(path.join(root, 'tests'), { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.test.ts'))
    .map((file) => path.join(root, 'tests', file))
    .filter((file) => fs.readFileSync(file, 'utf8').includes('UPSTREAMS'));
  const selected = users.some((file) =>
    filters.some((filter) => file.includes(filter) || file === path.resolve(root, filter)),
  );
  return selected ? undefined : 'none of the selected test files runs on it';
}

/** `$JAVA_HOME/bin/java` when JAVA_HOME is set (Maven uses that JDK too), else `java` from PATH. */
function javaCommand(): string {
  const home = process.env.JAVA_HOME;
  return home && fs.existsSync(path.join(home, 'bin/java')) ? path.join(home, 'bin/java') : 'java';
}

/** The newest modification time among the module's sources (pom.xml and src/). */
function sourcesModified(): number {
  let newest = fs.statSync(path.join(MODULE_DIR, 'pom.xml')).mtimeMs;
  for (const entry of fs.readdirSync(path.join(MODULE_DIR, 'src'), {
    recursive: true,
    withFileTypes: true,
  })) {
    if (entry.isFile())
      newest = Math.max(newest, fs.statSync(path.join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

const isFresh = () => fs.existsSync(JAR) && fs.statSync(JAR).mtimeMs >= sourcesModified();

/** Builds the jar unless it is newer than every source; one build at a time in this checkout. */
async function buildIfStale(): Promise<string> {
  if (isFresh()) return 'jar up to date';
  return withBuildLock(async () => {
    if (isFresh()) return 'jar built by another run';
    console.log(
      '[tests] real HAPI FHIR tier: building tests/hapi-server with Maven (the first build downloads ~250 MB)',
    );
    const started = Date.now();
    const { code, output } = await run(
      'mvn',
      ['-q', '-B', '-DskipTests', '-f', path.join(MODULE_DIR, 'pom.xml'), 'package'],
      BUILD_TIMEOUT_MS,
    );
    if (code !== 0 || !fs.existsSync(JAR))
      throw new Error(
        `[tests] real HAPI FHIR tier: the Maven build failed (exit ${code}); set SKIP_HAPI=1 to skip the tier.\n${tail(output)}`,
      );
    return `built in ${((Date.now() - started) / 1000).toFixed(1)} s`;
  });
}

/**
 * Another `npm test` in the same checkout may be building right now: two Maven builds writing
 * one target/ folder corrupt the jar, so the second waits for the first.
 */
async function withBuildLock<T>(build: () => Promise<T>): Promise<T> {
  const lock = path.join(MODULE_DIR, 'target/.build.lock');
  fs.mkdirSync(path.dirname(lock), { recursive: true });
  const deadline = Date.now() + BUILD_TIMEOUT_MS;
  for (;;) {
    try {
      fs.writeFileSync(lock, String(process.pid), { flag: 'wx' });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number(fs.readFileSync(lock, 'utf8'));
      if (!isAlive(holder)) fs.rmSync(lock, { force: true });
      else if (Date.now() > deadline)
        throw new Error(`[tests] real HAPI FHIR tier: ${lock} held by pid ${holder}`);
      else await sleep(1000);
    }
  }
  try {
    return await build();
  } finally {
    fs.rmSync(lock, { force: true });
  }
}

interface Booted {
  child: ChildProcess;
  exited: Promise<number | null>;
  baseUrl: string;
  bootMs: number;
  log: string;
}

/** Starts the jar on a free loopback port and waits for its `HAPI_READY <base>` line; retries a lost port race. */
async function boot(): Promise<Booted> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      return await bootOn(port);
    } catch (error) {
      if (attempt < 3 && /BindException|Address already in use/.test(String(error))) continue;
      throw error;
    }
  }
}

function bootOn(port: number): Promise<Booted> {
  const log = path.join(os.tmpdir(), `fhir-facade-hapi-${port}.log`);
  // run a copy: a later run in this checkout may rebuild target/hapi-server.jar while this server still
  // loads classes from it (seen: a server whose jar was rebuilt under it stopped answering)
  const jar = path.join(os.tmpdir(), `fhir-facade-hapi-${port}.jar`);
  fs.copyFileSync(JAR, jar, fs.constants.COPYFILE_FICLONE);
  const logFile = fs.createWriteStream(log);
  const started = Date.now();
  // stdin stays an open pipe: the server exits when it closes, so it cannot outlive a killed test run
  const child = spawn(javaCommand(), [...JVM_FLAGS, '-jar', jar, String(port)], {
    env: { ...process.env, HAPI_STOP_ON_STDIN_CLOSE: 'true' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let output = '';
  // keep reading after the ready line: a full pipe would block the server's logging
  const collect = (chunk: Buffer) => {
    logFile.write(chunk);
    output = (output + chunk.toString('utf8')).slice(-20_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  exited.then(() => {
    logFile.end();
    fs.rmSync(jar, { force: true });
  });
  return new Promise<Booted>((resolve, reject) => {
    let ready = false;
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      child.stdin?.destroy();
      reject(new Error(`[tests] real HAPI FHIR tier: the server ${why} (log ${log}).\n${tail(output)}`));
    };
    const timer = setTimeout(() => fail(`was not ready within ${BOOT_TIMEOUT_MS / 1000} s`), BOOT_TIMEOUT_MS);
    child.once('error', (error) => fail(`could not start: ${error.message}`));
    exited.then((code) => {
      if (!ready) fail(`exited with ${code} before it was ready`);
      else if (server?.child === child)
        console.error(
          `[tests] real HAPI FHIR tier: the server exited with ${code} during the run (log ${log})`,
        );
    });
    const onData = () => {
      // the whole line: a chunk may end inside it ("HAPI_READY http://127.0.0.1:" was seen)
      const base = /HAPI_READY (\S+) \(boot \d+ ms\)/.exec(output)?.[1];
      if (!base) return;
      ready = true;
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      resolve({ child, exited, baseUrl: base, bootMs: Date.now() - started, log });
    };
    child.stdout?.on('data', onData);
  });
}

function run(
  command: string,
  args: string[],
  timeoutMs: number,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c) => {
      output += c;
    });
    child.stderr.on('data', (c) => {
      output += c;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: -1, output: String(error) });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

const tail = (text: string) => text.trim().split('\n').slice(-40).join('\n');
/** An unref'd wait: a pending timer must not keep vitest's process alive after the run. */
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms).unref());
