/**
 * `import()` of an ES module package, in the CommonJS bundle too. There scripts/runBundle.mjs hands
 * the bundle an import() of its own (`__importEsm`, a parameter of the function the bundle is
 * written as): Node 20 loses the import() of a script compiled from V8's code cache
 * (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING). Under tsx and in tests, this module's own import().
 */
declare const __importEsm: ((specifier: string) => Promise<unknown>) | undefined;

export const importEsm = (specifier: string): Promise<unknown> =>
  typeof __importEsm === 'function' ? __importEsm(specifier) : import(specifier);
