import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs } from 'kysely';

/**
 * Holds every insert (the audit trail's, in these tests), once it ran, until `release()`: a
 * writer slower than the requests. `reached` settles when the first insert is held.
 */
export function heldInserts() {
  const inserts = new Set<unknown>();
  let release = () => {};
  const released = new Promise<void>((settle) => {
    release = settle;
  });
  let reach = () => {};
  const reached = new Promise<void>((settle) => {
    reach = settle;
  });
  const plugin: KyselyPlugin = {
    transformQuery: (args: PluginTransformQueryArgs) => {
      if (args.node.kind === 'InsertQueryNode') inserts.add(args.queryId);
      return args.node;
    },
    transformResult: async (args: PluginTransformResultArgs) => {
      if (inserts.delete(args.queryId)) {
        reach();
        await released;
      }
      return args.result;
    },
  };
  return { plugin, reached, release };
}

/** Whether `promise` settles within `ms` (0: whether it has by the next turn of the event loop). */
export async function settledWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}
