// A hashing thread that answers its first job (the hasher's own dummy hash) and then dies of an
// uncaught error on the next, as a thread whose native code crashed would.
import { parentPort } from 'node:worker_threads';

let jobs = 0;
parentPort.on('message', ({ id }) => {
  if (jobs++ === 0) parentPort.postMessage({ id, result: 'a stand-in hash' });
  else
    setTimeout(() => {
      throw new Error('the stand-in thread crashed');
    }, 0);
});
