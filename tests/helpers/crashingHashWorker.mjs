// A hashing thread that dies at once while the file named by HASH_THREAD_CRASH_MARKER exists
// (a thread that cannot start: a broken native module, no memory), and is the real one otherwise.
import { existsSync } from 'node:fs';

const marker = process.env.HASH_THREAD_CRASH_MARKER;
if (marker && existsSync(marker)) process.exit(1);
await import('../../src/auth/passwordWorker.mjs');
