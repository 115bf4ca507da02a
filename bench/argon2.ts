/**
 * Measures argon2id hash and verify with the parameters the gateway uses
 * (ARGON2_PARAMETERS in src/auth/passwords.ts), the way it runs them: the synchronous calls
 * on one thread (the gateway runs them on its dedicated worker thread), and one round trip
 * through that worker. The figures go into docs/security.md.
 *
 *   npx tsx bench/argon2.ts [iterations=200]
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { hashSync, verifySync } from '@node-rs/argon2';
import { ARGON2_PARAMETERS, createPasswordHasher } from '../src/auth/passwords.js';

const iterations = Number(process.argv[2] ?? 200);
const PASSWORD = 'correct horse battery staple';

function summary(samples: number[]) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  const mean = sorted.reduce((s, v) => s + v, 0) / sorted.length;
  return { median: at(0.5), p95: at(0.95), mean };
}

function time(fn: () => unknown): number {
  const start = performance.now();
  fn();
  return performance.now() - start;
}

async function timeAsync(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

const format = (s: { median: number; p95: number; mean: number }) =>
  `median ${s.median.toFixed(2)} ms, p95 ${s.p95.toFixed(2)} ms, mean ${s.mean.toFixed(2)} ms`;

async function main() {
  const options = { ...ARGON2_PARAMETERS };
  console.log(
    `argon2id m=${options.memoryCost} KiB, t=${options.timeCost}, p=${options.parallelism}, ${options.outputLen}-byte output`,
  );
  console.log(
    `node ${process.version}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown CPU'}), ${iterations} iterations\n`,
  );

  // warm up: first calls allocate the memory blocks
  const stored = hashSync(PASSWORD, options);
  for (let i = 0; i < 10; i++) verifySync(stored, PASSWORD, options);

  const hashes = Array.from({ length: iterations }, () => time(() => hashSync(PASSWORD, options)));
  const verifies = Array.from({ length: iterations }, () =>
    time(() => verifySync(stored, PASSWORD, options)),
  );
  console.log(`hashSync    ${format(summary(hashes))}`);
  console.log(`verifySync  ${format(summary(verifies))}`);

  const hasher = await createPasswordHasher();
  try {
    const workerHash = await hasher.hash(PASSWORD);
    for (let i = 0; i < 10; i++) await hasher.verify(workerHash, PASSWORD);
    const workerHashes: number[] = [];
    const workerVerifies: number[] = [];
    for (let i = 0; i < iterations; i++) workerHashes.push(await timeAsync(() => hasher.hash(PASSWORD)));
    for (let i = 0; i < iterations; i++)
      workerVerifies.push(await timeAsync(() => hasher.verify(workerHash, PASSWORD)));
    console.log(`worker hash   ${format(summary(workerHashes))}  (round trip through the hashing thread)`);
    console.log(`worker verify ${format(summary(workerVerifies))}`);
  } finally {
    await hasher.close();
  }
}

await main();
