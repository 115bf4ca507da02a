export function installedVersion(name: string): string | undefined;
