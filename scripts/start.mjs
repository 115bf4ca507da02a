// `npm start`: builds dist/ when a source changed (scripts/build.mjs, in a process of its own so
// none of the build's memory stays), then runs the gateway in this same process: when nothing
// changed, one Node start instead of a build process and then a serving one (~120 ms less from
// `npm start` to ready). Plain JS: it runs before any loader.
import { execFileSync } from 'node:child_process';
import cluster from 'node:cluster';

// a cluster worker runs this file again (src/cluster.ts forks it): its primary has built already,
// so a worker does not even load the build's modules (~20 ms of each worker's start)
if (cluster.isPrimary) {
  const { needsBuild } = await import('./build.mjs');
  if (needsBuild())
    execFileSync(process.execPath, [new URL('./build.mjs', import.meta.url).pathname], { stdio: 'inherit' });
}
await import('../dist/main.js');
