/** Whether dist/ is older than a source, or missing (then `npm start` builds first). */
export function needsBuild(): boolean;
/** The bundle's code with every character beyond ASCII (all in comments: checked) replaced by `?`. */
export function asciiOnly(
  esbuild: { transform: typeof import('esbuild').transform },
  code: string,
): Promise<string>;
