// Runs argon2id on its own thread so hashing never blocks the event loop nor competes with
// jose and the FHIR client for libuv's thread pool (measured in ../shared/STACK.md).
// Plain JavaScript on purpose: a worker file must load without a TypeScript loader.
import { parentPort, workerData } from 'node:worker_threads';
import { hashSync, verifySync } from '@node-rs/argon2';

const options = workerData.options;

parentPort.on('message', (message) => {
  const { id, op, password, hash } = message;
  try {
    const result = op === 'hash' ? hashSync(password, options) : verifySync(hash, password, options);
    parentPort.postMessage({ id, result });
  } catch (error) {
    parentPort.postMessage({ id, error: error instanceof Error ? error.message : 'argon2 failed' });
  }
});
