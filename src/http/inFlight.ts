/**
 * The requests this process is still handling. A shutdown cuts the connections of those still
 * running at its deadline, but their handlers go on (an upstream call, a database write, the
 * audit entry): it waits for them before it closes the database under them.
 */
export interface RequestsInFlight {
  enter(): void;
  leave(): void;
  /** Resolves once none is running, or after `maxMs`: true when none is. */
  settled(maxMs: number): Promise<boolean>;
}

export function createRequestsInFlight(): RequestsInFlight {
  let running = 0;
  let onIdle: (() => void) | undefined;
  return {
    enter: () => {
      running += 1;
    },
    leave: () => {
      running -= 1;
      if (running === 0) onIdle?.();
    },
    settled: (maxMs) =>
      running === 0
        ? Promise.resolve(true)
        : new Promise((resolve) => {
            const timer = setTimeout(() => resolve(running === 0), maxMs);
            onIdle = () => {
              clearTimeout(timer);
              resolve(true);
            };
          }),
  };
}
