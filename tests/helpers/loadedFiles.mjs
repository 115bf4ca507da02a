// Loaded with `--import` ahead of a script run in its own process (tests/lazyPackages.test.ts):
// records every file the process loads, ES modules through a resolve hook (they never enter
// require's cache) and CommonJS ones from require's cache. `await globalThis.loadedFiles()`, one
// call at a time (a second call while one waits would leave the first unanswered).
import { createRequire, register } from 'node:module';
import { MessageChannel } from 'node:worker_threads';

const hooks = `
  let port;
  export function initialize(data) {
    port = data.port;
    // answered after every URL posted before it: messages on one port arrive in order
    port.on('message', (message) => { if (message === 'flush') port.postMessage({ flushed: true }); });
    port.unref();
  }
  export async function resolve(specifier, context, next) {
    const result = await next(specifier, context);
    port.postMessage(result.url);
    return result;
  }`;

const { port1, port2 } = new MessageChannel();
const resolved = new Set();
let flushed = () => undefined;
port1.on('message', (message) => {
  if (typeof message === 'string') resolved.add(message);
  else flushed();
});
port1.unref();
register(`data:text/javascript,${encodeURIComponent(hooks)}`, {
  data: { port: port2 },
  transferList: [port2],
});

globalThis.loadedFiles = async () => {
  // the hooks run on a thread of their own: its answer to a flush comes after every URL it sent
  const answered = new Promise((resolve) => {
    flushed = resolve;
  });
  port1.ref();
  port1.postMessage('flush');
  await answered;
  port1.unref();
  return [...resolved, ...Object.keys(createRequire(import.meta.url).cache)];
};
