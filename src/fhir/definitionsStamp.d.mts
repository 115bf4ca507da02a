export interface DefinitionsStamp {
  readonly definitions: string | undefined;
  readonly core: string | undefined;
  readonly v8: string;
  readonly layout: number;
}

export const INDEXED_SCHEMA_FILE: string;

export const STAMP_FILE: string;

export function builtStamp(
  dir: string,
): (Partial<DefinitionsStamp> & { readonly makers?: unknown }) | undefined;

export type UsableDefinitions = 'indexed-schema' | 'slim-files' | 'package-files';

export function definitionsStamp(): DefinitionsStamp;

export function usableDefinitions(
  built: Partial<DefinitionsStamp> | undefined,
  installed: DefinitionsStamp,
): UsableDefinitions;
