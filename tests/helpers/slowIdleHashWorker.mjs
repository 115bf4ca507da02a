// A hashing thread whose idle-priority role spends 300 ms before each job, as a thread the kernel
// gives no CPU, and writes a line for each job it is given to the file HASH_THREAD_JOB_LOG names;
// the normal-priority role is the real thread as it is.
import { appendFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { delayEachJob } from './delayedHashJobs.mjs';

if (workerData.priority === 'idle') {
  const log = process.env.HASH_THREAD_JOB_LOG;
  delayEachJob(parentPort, 300, () => {
    if (log) appendFileSync(log, 'job\n');
  });
}
await import('../../src/auth/passwordWorker.mjs');
