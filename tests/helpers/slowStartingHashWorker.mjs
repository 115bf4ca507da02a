// A hashing thread whose idle-priority role spends 300 ms before each job (a thread the kernel
// gives no CPU), and of which every idle thread after the first spends 5 s before it starts (a
// start-up on busy CPUs); the file HASH_THREAD_STARTS names counts the starts. The
// normal-priority role is the real thread as it is.
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { delayEachJob, pause } from './delayedHashJobs.mjs';

if (workerData.priority === 'idle') {
  const starts = process.env.HASH_THREAD_STARTS;
  const earlier = existsSync(starts) ? readFileSync(starts, 'utf8').length : 0;
  appendFileSync(starts, 'x');
  if (earlier > 0) pause(5_000);
  delayEachJob(parentPort, 300);
}
await import('../../src/auth/passwordWorker.mjs');
