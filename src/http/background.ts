import type { Logger } from '../logger.js';

/**
 * Work that runs after the response is sent (e.g. mailing a code for "forgot password", so
 * the answer's timing does not reveal whether the account exists). Shutdown waits for it.
 */
export interface BackgroundTasks {
  run(task: () => Promise<void>): void;
  /** Resolves once every task started so far has finished. */
  drain(): Promise<void>;
}

export function createBackgroundTasks(logger: Logger): BackgroundTasks {
  const running = new Set<Promise<void>>();
  return {
    run: (task) => {
      const promise = task()
        .catch((error: unknown) => logger.error({ err: error }, 'background task failed'))
        .finally(() => running.delete(promise));
      running.add(promise);
    },
    drain: async () => {
      while (running.size > 0) await Promise.allSettled([...running]);
    },
  };
}
