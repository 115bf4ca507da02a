// Runs argon2id on its own thread so hashing never blocks the event loop nor competes with
// jose and the FHIR client for libuv's thread pool (measured in ../shared/STACK.md).
// Plain JavaScript on purpose: a worker file must load without a TypeScript loader.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';

// required, not imported: an ES import of this CommonJS package took 15–18 ms of the thread's start against 5
const { hashSync, verifySync } = createRequire(import.meta.url)('@node-rs/argon2');

const options = workerData.options;

/** Linux's SCHED_IDLE, as /proc/<pid>/task/<tid>/stat numbers a thread's policy (its 41st field). */
const SCHED_IDLE = 5;

/** This thread's scheduling policy, from the 41st field of its stat line (the name before it may hold spaces). */
const policyOf = (threadPath) =>
  Number(readFileSync(`${threadPath}/stat`, 'utf8').split(') ').pop().split(' ')[38]);

/**
 * Where util-linux installs chrt: a fixed path, not PATH (npm puts node_modules/.bin first on it).
 * `workerData.chrt` is the tests' stand-in for a chrt that fails.
 */
const CHRT = workerData.chrt ?? ['/usr/bin/chrt', '/bin/chrt'].find((file) => existsSync(file));

/**
 * `idle`: this thread alone under Linux's SCHED_IDLE. The kernel then gives it only the CPU time no
 * ordinary thread of its cgroup wants, and takes the core back the moment a request's thread
 * wakes: a storm of logins no longer delays every other request behind a 5–12 ms hash
 * (docs/performance.md). Node has no call for it, so util-linux's `chrt` sets it once, on this
 * thread only (any process may lower its own threads). Answers the priority the thread runs at.
 */
function lowerPriority(asked) {
  if (asked !== 'idle') return { priority: 'normal' };
  try {
    return setIdlePolicy();
  } catch (error) {
    return { priority: 'normal', reason: `could not set SCHED_IDLE (${error?.code ?? 'error'})` };
  }
}

function setIdlePolicy() {
  if (!existsSync('/proc/thread-self'))
    return { priority: 'normal', reason: 'no /proc/thread-self (not Linux)' };
  // a /proc of another PID namespace would name another process's thread
  if (readlinkSync('/proc/self') !== String(process.pid))
    return { priority: 'normal', reason: '/proc shows another PID namespace' };
  if (!CHRT) return { priority: 'normal', reason: 'chrt not found (util-linux)' };
  // "/proc/thread-self" -> "<pid>/task/<tid>": this thread's own entry, and its id for chrt
  const threadPath = `/proc/${readlinkSync('/proc/thread-self')}`;
  const tid = threadPath.split('/').pop();
  // no shell, and none of the gateway's environment (its secrets) for the child
  const result = spawnSync(CHRT, ['--idle', '--pid', '0', tid], { stdio: 'ignore', env: {}, timeout: 5_000 });
  if (result.status !== 0)
    return {
      priority: 'normal',
      reason: `chrt --idle failed (${result.error?.code ?? `exit ${result.status}`})`,
    };
  if (policyOf(threadPath) !== SCHED_IDLE) return { priority: 'normal', reason: 'the policy did not change' };
  return { priority: 'idle' };
}

parentPort.postMessage({ started: lowerPriority(workerData.priority) });

parentPort.on('message', (message) => {
  const { id, op, password, hash } = message;
  try {
    const result = op === 'hash' ? hashSync(password, options) : verifySync(hash, password, options);
    parentPort.postMessage({ id, result });
  } catch (error) {
    parentPort.postMessage({ id, error: error instanceof Error ? error.message : 'argon2 failed' });
  }
});
