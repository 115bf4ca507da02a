// Loaded with `--import` ahead of a script run in its own process (tests/lazyPackages.test.ts):
// records every file the process loads, ES modules through a resolve hook (they never enter
// require's cache) and CommonJS ones from require's cache. `await globalThis.loadedFiles()`.
import { createRequire, register } from 'node:module';
import { MessageChannel } from 'node:worker_threads';

const hooks = `
  let port;
  export function initialize(data) { port = data.port; }
  export async function resolve(specifier, context, next) {
    const result = await next(specifier, context);
    port.postMessage(result.url);
    return result;
  }`;

const { port1, port2 } = new MessageChannel();
const resolved = new Set();
port1.on('message', (url) => resolved.add(url));
port1.unref();
register(`data:text/javascript,${encodeURIComponent(hooks)}`, {
  data: { port: port2 },
  transferList: [port2],
});

globalThis.loadedFiles = async () => {
  // the hooks run on a thread of their own: give their last messages time to arrive
  await new Promise((resolve) => setTimeout(resolve, 200));
  return [...resolved, ...Object.keys(createRequire(import.meta.url).cache)];
};
