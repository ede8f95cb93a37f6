import { defineConfig } from 'vitest/config';

// Tests import sibling packages through their built `dist/` (npm test runs `tsc -b` first), exactly as users do.
export default defineConfig({
  test: {
    include: ['packages/*/src/**/*.test.ts', 'test/**/*.test.ts', 'contracts/test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
  },
});
