// A hashing thread whose idle-priority role spends 300 ms before each job, as a thread the kernel
// gives no CPU, and writes a line for each job it is given to the file HASH_THREAD_JOB_LOG names;
// the normal-priority role is the real thread as it is.
import { appendFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

if (workerData.priority === 'idle') {
  const log = process.env.HASH_THREAD_JOB_LOG;
  // the real thread's own listener, delayed (a listener of our own would start the port before it exists)
  const on = parentPort.on.bind(parentPort);
  parentPort.on = (event, listener) =>
    on(
      event,
      event !== 'message'
        ? listener
        : (message) => {
            if (log) appendFileSync(log, 'job\n');
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
            listener(message);
          },
    );
}
await import('../../src/auth/passwordWorker.mjs');
