// For the stand-in hashing threads: blocks this thread for `ms`, as a thread the kernel gives no CPU.
export const pause = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * Delays each job the real hashing thread (imported after this call) is given by `ms`, calling
 * `onJob` first: its own listener, wrapped (a listener of our own would start the port before it exists).
 */
export function delayEachJob(port, ms, onJob = () => undefined) {
  const on = port.on.bind(port);
  port.on = (event, listener) =>
    on(
      event,
      event !== 'message'
        ? listener
        : (message) => {
            onJob();
            pause(ms);
            listener(message);
          },
    );
}
