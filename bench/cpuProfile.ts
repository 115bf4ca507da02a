import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnReady } from './lib.js';
import { closedLoop, loginLoop, MEASURED, type Served, serve, stop } from './servedCheckout.js';

/**
 * `npm run bench:perf -- [read|bundle|panel|healthz|me|login]` (the requests of
 * servedCheckout.ts): where the gateway's CPU goes, sampled by Linux `perf` on CPU time. `BENCH_PROFILE` (node --cpu-prof) samples wall-clock time: on a machine whose two
 * cores are shared by the client, the upstream and the gateway, a thread that is runnable but not
 * running is counted where it was preempted, which is mostly at a syscall's return, so socket
 * writes and SQLite's lock calls looked several times as costly as they are. `perf` counts only
 * time on a CPU, in every thread of the process (the audit writer and the checkpointer too) and in
 * the kernel work a request causes (loopback TCP is paid by its sender).
 *
 * The checkout in the current directory is built and served as bench:compare serves it, with
 * `--perf-basic-prof-only-functions` so `perf` can name JavaScript frames; after a warm-up of
 * BENCH_WARM_UP requests, BENCH_REQUESTS (default 30,000) are sampled at 2,999 Hz. Prints, for the
 * frames that matter, the share of samples they are on the stack of (inclusive) and what that is in
 * µs per request; bundled frames are named by the source file esbuild marks them with; then the
 * samples by the file and by the function of their innermost JavaScript frame, and those with no
 * JavaScript frame by the event-loop work they are in. `login`
 * samples BENCH_LOGINS logins (default 2,000, 5 in flight, after BENCH_WARM_UP of them; default
 * 1,000) and shows the main thread alone: argon2's thread is the process's largest by far, and the
 * main thread's share of a login is what every other request waits behind.
 */

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 30_000);
const WARM_UP = Number(process.env.BENCH_WARM_UP ?? 10_000);
const SHOWN = Number(process.env.BENCH_PERF_LINES ?? 60);
const LOGINS = Number(process.env.BENCH_LOGINS ?? 2_000);
const LOGIN_WARM_UP = Number(process.env.BENCH_WARM_UP ?? 1_000);
/** Native frames shown besides the usual ones, e.g. `BENCH_PERF_FRAMES='^(sqlite3|btree|pager|wal)'` for SQLite's own. */
const EXTRA_FRAMES = process.env.BENCH_PERF_FRAMES
  ? new RegExp(process.env.BENCH_PERF_FRAMES, 'i')
  : undefined;

/** What a scenario runs: `count` requests, answering the CPU µs per request that the report divides. */
interface Scenario {
  readonly count: number;
  readonly warmUp: number;
  run(server: Served, count: number): Promise<number>;
  /** Only the samples of the main thread (its thread id is the process id). */
  readonly mainThreadOnly: boolean;
}

function scenarioNamed(name: string): Scenario | undefined {
  if (name === 'login')
    return {
      count: LOGINS,
      warmUp: LOGIN_WARM_UP,
      run: loginLoop,
      mainThreadOnly: true,
    };
  const request = MEASURED[name];
  if (!request) return undefined;
  return {
    count: REQUESTS,
    warmUp: WARM_UP,
    run: (server, count) => closedLoop(server, request, count),
    mainThreadOnly: false,
  };
}

/** One sample: its thread and its frames, innermost first. */
interface Sample {
  readonly thread: string;
  readonly frames: readonly string[];
}

/** `perf script -F tid,ip,sym` output as samples. */
function parseSamples(text: string): Sample[] {
  return text
    .split('\n\n')
    .map((block) => block.split('\n').filter((line) => line.trim() !== ''))
    .filter((lines) => lines.length > 1)
    .map(([head, ...stack]) => ({
      thread: (head as string).trim(),
      // "  7f1c... symbol+0x1f": the symbol without its offset
      frames: stack.map((line) =>
        line
          .trim()
          .replace(/^\S+\s+/, '')
          .replace(/\+0x[0-9a-f]+$/, ''),
      ),
    }));
}

/** The source file an esbuild bundle line belongs to (the `// src/...` comment above it). */
function sourceFileOf(bundle: string): (line: number) => string {
  let marks: { line: number; file: string }[] | undefined;
  return (line) => {
    marks ??= fs
      .readFileSync(bundle, 'utf8')
      .split('\n')
      .flatMap((text, i) =>
        /^\/\/ (src|db|node_modules)\//.test(text) ? [{ line: i + 1, file: text.slice(3) }] : [],
      );
    let file = '';
    for (const mark of marks) {
      if (mark.line > line) break;
      file = mark.file;
    }
    return file;
  };
}

/** A frame as a reader wants it: a JavaScript function with its source file, else the native symbol. */
function labeller(): (frame: string) => string {
  const bundles = new Map<string, (line: number) => string>();
  return (frame) => {
    const js = /^JS:[*^~]?(\S*) (?:file:\/\/)?(\S+?):(\d+):\d+$/.exec(frame);
    if (!js) return frame;
    const [, name, file, line] = js as unknown as [string, string, string, string];
    const where = file.includes('/dist/')
      ? (bundles.get(file) ?? bundles.set(file, sourceFileOf(file)).get(file))?.(Number(line))
      : file.replace(/^.*\/node_modules\//, '').replace(/^node:/, 'node:');
    return `${name || '(anonymous)'} [${where}]`;
  };
}

/** Samples each label is on the stack of (counted once per sample). */
function inclusiveCounts(samples: readonly Sample[]): Map<string, number> {
  const label = labeller();
  const counts = new Map<string, number>();
  for (const sample of samples)
    for (const frame of new Set(sample.frames.map(label))) counts.set(frame, (counts.get(frame) ?? 0) + 1);
  return counts;
}

/**
 * Samples by the file of their innermost JavaScript frame: what each file's own code costs,
 * with the native work it calls (SQLite's step is its caller's, a socket write node:net's).
 */
function selfCountsByFile(samples: readonly Sample[]): Map<string, number> {
  return selfCounts(samples, (innermost) => /\[(.+)\]$/.exec(innermost)?.[1] ?? innermost);
}

/** Samples by their innermost JavaScript function (`key` of its label), with the native work it calls. */
function selfCounts(samples: readonly Sample[], key: (innermost: string) => string): Map<string, number> {
  const label = labeller();
  const counts = new Map<string, number>();
  for (const sample of samples) {
    const innermost = sample.frames.map(label).find((frame) => /\[.+\]$/.test(frame));
    const name = innermost ? key(innermost) : '(no JavaScript frame)';
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return counts;
}

/**
 * The frames of the event loop and of a thread's or the process's start, which say nothing of the
 * work below them: libuv's poll and dispatch, Node's main loop, a thread's entry (a worker
 * thread's, V8's platform threads'), the system-call entry.
 */
const LOOP_FRAME =
  /^(_start|__libc_start_main.*|__libc_start_call_main|main|\[unknown\]|start_thread|clone3?|node::Start.*|node::LoadSnapshotDataAndRun|node::NodeMainInstance::Run.*|node::SpinEventLoop.*|node::worker::Worker::.*|node::.*PlatformWorkerThread.*|node::.*WorkerThreadsTaskRunner.*|uv_run|uv__io_poll|uv__async_io.*|entry_SYSCALL_64_after_hwframe|do_syscall_64)$/;

/**
 * The samples with no JavaScript frame, by the first frame below the event loop (frames are
 * innermost first): a message from a thread (`MessagePort::OnMessage`), a thread-pool job's
 * completion (`uv__work_done`), a socket read, the poll's system call, V8's tasks.
 */
function nativeCounts(samples: readonly Sample[]): Map<string, number> {
  const label = labeller();
  const counts = new Map<string, number>();
  for (const sample of samples) {
    const frames = sample.frames.map(label);
    if (frames.some((frame) => /\[.+\]$/.test(frame))) continue;
    const entry = frames.findLast((frame) => !LOOP_FRAME.test(frame)) ?? '(the loop itself)';
    counts.set(entry, (counts.get(entry) ?? 0) + 1);
  }
  return counts;
}

/** The scenario's requests sampled by `perf record`: CPU µs per request and the samples. */
async function sampled(
  server: Served,
  scenario: Scenario,
): Promise<{ cpuPerRequest: number; samples: Sample[] }> {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'ff-perf-'));
  const data = path.join(directory, 'perf.data');
  const pid = String(server.child.pid);
  const recorder = spawn('perf', ['record', '-F', '2999', '-g', '-p', pid, '-o', data], { stdio: 'ignore' });
  const stopped = new Promise((resolve) => recorder.once('exit', resolve));
  try {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const cpuPerRequest = await scenario.run(server, scenario.count);
    recorder.kill('SIGINT');
    await stopped;
    const script = execFileSync('perf', ['script', '-i', data, '-F', 'tid,ip,sym'], {
      maxBuffer: 1 << 30,
      encoding: 'utf8',
    });
    const samples = parseSamples(script);
    return {
      cpuPerRequest,
      samples: scenario.mainThreadOnly ? samples.filter((sample) => sample.thread === pid) : samples,
    };
  } finally {
    recorder.kill('SIGINT');
    fs.rmSync(directory, { recursive: true, force: true });
  }
}

/** The report: CPU per request, the threads' shares, and the frames that matter, largest first. */
function report(
  scenario: string,
  requests: number,
  cpuPerRequest: number,
  samples: readonly Sample[],
): string {
  const threads = new Map<string, number>();
  for (const { thread } of samples) threads.set(thread, (threads.get(thread) ?? 0) + 1);
  const share = (count: number) => `${((100 * count) / samples.length).toFixed(1).padStart(5)}%`;
  const micros = (count: number) => `${((cpuPerRequest * count) / samples.length).toFixed(1).padStart(6)} µs`;
  /** The `limit` largest counts, each with its share of the samples and of a request. */
  const largest = (counts: Iterable<[string, number]>, limit: number) =>
    [...counts]
      .sort((a, b) => b[1] - a[1])
      .slice(0, limit)
      .map(([label, count]) => `${share(count)} ${micros(count)}  ${label}`);
  const lines = [
    `${scenario}: ${cpuPerRequest} µs CPU per request over ${requests} (utime+stime); ${samples.length} samples`,
    `threads: ${[...threads.values()]
      .sort((a, b) => b - a)
      .slice(0, 4)
      .map(share)
      .join(', ')} (the main thread first)`,
    'inclusive share of samples, and that share of a request:',
    ...largest(
      [...inclusiveCounts(samples)].filter(
        ([label]) =>
          label.includes('[') ||
          /^(tcp_|v8::internal::(Heap::|JsonParser|JsonStringifier)|sqlite3_step|Statement::)/.test(label) ||
          EXTRA_FRAMES?.test(label) === true,
      ),
      SHOWN,
    ),
    'by the file of the innermost JavaScript frame (each sample once), and that share of a request:',
    ...largest(selfCountsByFile(samples), 25),
    'by the innermost JavaScript function (each sample once), and that share of a request:',
    ...largest(
      selfCounts(samples, (innermost) => innermost),
      SHOWN,
    ),
    'the samples with no JavaScript frame, by the first frame below the event loop:',
    ...largest(nativeCounts(samples), 15),
  ];
  return `${lines.join('\n')}\n`;
}

async function main() {
  const name = process.argv[2] ?? 'read';
  const scenario = scenarioNamed(name);
  if (!scenario)
    throw new Error(`usage: npm run bench:perf -- [${[...Object.keys(MEASURED), 'login'].join('|')}]`);
  try {
    execFileSync('perf', ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error('bench:perf needs Linux perf (Debian: apt-get install linux-perf)');
  }
  const upstream = await spawnReady(process.execPath, ['bench/staticUpstream.mjs'], {});
  let server: Served | undefined;
  try {
    server = await serve(process.cwd(), 4602, `http://127.0.0.1:${upstream.port}`, [
      '--perf-basic-prof-only-functions',
    ]);
    await scenario.run(server, scenario.warmUp);
    const { cpuPerRequest, samples } = await sampled(server, scenario);
    const what = scenario.mainThreadOnly ? `${name} (the main thread)` : name;
    process.stdout.write(report(what, scenario.count, cpuPerRequest, samples));
  } finally {
    if (server) {
      await stop(server);
      // the JIT symbol map node wrote for perf (--perf-basic-prof-only-functions)
      fs.rmSync(`/tmp/perf-${server.child.pid}.map`, { force: true });
    }
    upstream.child.kill('SIGTERM');
  }
}

await main();
