import path from 'node:path';
import { median, rssMiB, spawnReady } from './lib.js';
import { closedLoop, MEASURED, type Served, serve, stop } from './servedCheckout.js';

/**
 * `npm run bench:compare -- <checkout A> <checkout B> [read|bundle|panel|healthz|me]`: two
 * builds of the gateway side by side, for measuring one change to the hot path. Each checkout is
 * built (scripts/build.mjs) and served as `node dist/main.js` with WORKERS=1 in front of the same
 * static upstream, with a patient and a practitioner provisioned and signed up through its API;
 * after a warm-up, closed loops of BENCH_REQUESTS requests (20 in flight) alternate between the
 * two for BENCH_ROUNDS rounds, the order flipped every round. Reports each build's CPU per
 * request (process utime + stime from /proc) and the paired differences B − A: the machine's
 * phases move both of a pair alike, so the pairs show a change of a few per cent that separate
 * invocations hide. Keep the default warm-up: with 3,000 requests an A/A run put B 45 µs above A
 * in every pair. `panel` is noisier: an A/A run of 8 rounds of 4,000 spread its pairs over ±300 µs.
 * A checkout of another commit: `git worktree add /tmp/base <ref> && ln -s "$PWD/node_modules" /tmp/base/`.
 * A change of Node's flags: one checkout twice, with BENCH_NODE_FLAGS_A / BENCH_NODE_FLAGS_B (space
 * separated, e.g. `--max-semi-space-size=32`); each build's RSS after its rounds is printed too.
 */

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 16);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 5000);
const WARM_UP = Number(process.env.BENCH_WARM_UP ?? 10_000);

/** Node flags for one side of the comparison, from BENCH_NODE_FLAGS_A or _B. */
const nodeFlags = (side: 'A' | 'B'): string[] =>
  (process.env[`BENCH_NODE_FLAGS_${side}`] ?? '').split(' ').filter(Boolean);

async function main() {
  const [a, b, scenario = 'read'] = process.argv.slice(2);
  const request = MEASURED[scenario];
  if (!a || !b || !request)
    throw new Error(
      `usage: npm run bench:compare -- <checkout A> <checkout B> [${Object.keys(MEASURED).join('|')}]`,
    );
  const upstream = await spawnReady(process.execPath, ['bench/staticUpstream.mjs'], {});
  const upstreamUrl = `http://127.0.0.1:${upstream.port}`;
  const servers: Served[] = [];
  try {
    servers.push(await serve(path.resolve(a), 4600, upstreamUrl, nodeFlags('A')));
    servers.push(await serve(path.resolve(b), 4601, upstreamUrl, nodeFlags('B')));
    for (const server of servers) await closedLoop(server, request, WARM_UP);
    const cpu: number[][] = [[], []];
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? [0, 1] : [1, 0];
      for (const i of order) cpu[i]?.push(await closedLoop(servers[i] as Served, request, REQUESTS));
    }
    const [rssA, rssB] = servers.map((server) => rssMiB(server.child.pid as number));
    const [first, second] = cpu as [number[], number[]];
    const pairs = second.map((value, i) => value - (first[i] as number));
    const lower = pairs.filter((d) => d < 0).length;
    process.stdout.write(
      [
        `${scenario}, CPU µs per request over ${ROUNDS} rounds of ${REQUESTS}:`,
        `  A ${a} ${nodeFlags('A').join(' ')}: median ${median(first)} ${JSON.stringify(first)}; RSS after ${rssA} MiB`,
        `  B ${b} ${nodeFlags('B').join(' ')}: median ${median(second)} ${JSON.stringify(second)}; RSS after ${rssB} MiB`,
        `  B − A per pair: median ${median(pairs)}; B lower in ${lower} of ${pairs.length} pairs`,
        '',
      ].join('\n'),
    );
  } finally {
    for (const server of servers) await stop(server);
    upstream.child.kill('SIGTERM');
  }
}

await main();
