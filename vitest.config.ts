import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Each file boots its own gateway + embedded FHIR server (~200 MiB); two cores, so two at a time.
    maxWorkers: 2,
    pool: 'forks',
    // hapiReal.ts builds and boots the real HAPI FHIR server once for the run (SKIP_HAPI=1 skips it)
    globalSetup: ['tests/helpers/globalSetup.ts', 'tests/helpers/hapiReal.ts'],
  },
});
