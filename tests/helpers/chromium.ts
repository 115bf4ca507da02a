import fs from 'node:fs';

/**
 * Debian's `chromium` (installed by .ci/run when missing), or CHROMIUM_PATH; undefined without
 * one, after a line naming the test that is skipped for it.
 */
export function findChromium(skipped: string): string | undefined {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'];
  const found = candidates.find((c): c is string => !!c && fs.existsSync(c));
  if (!found)
    console.warn(
      `[tests] no Chromium binary (apt-get install chromium, or set CHROMIUM_PATH): ${skipped} is skipped`,
    );
  return found;
}

/** Headless, and nothing the browser would fetch on its own (updates, sync, QUIC probes). */
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
