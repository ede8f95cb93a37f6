import { defineConfig } from 'vitest/config';

/** Files that mock modules (`vi.mock`): they need a module cache of their own. */
const MOCKING = ['packages/hub/src/store/lmdb-wal-failure.test.ts', 'packages/client/src/connection.test.ts'];
const UNIT = ['packages/*/src/**/*.test.ts', 'contracts/test/**/*.test.ts'];

// Tests import sibling packages through their built `dist/` (npm test runs `tsc -b` first), exactly as users do.
// The packages' unit tests and the contract tests share a worker's module cache (isolate: false): they start no
// processes of ours and clean up after themselves, and a fresh process per file cost ~0.4 s each, ~55 s of CI's wall
// time for those 130 files. The end-to-end tests (test/) and the files that mock modules keep a process per file.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    projects: [
      { extends: true, test: { name: 'unit', include: UNIT, exclude: MOCKING, isolate: false } },
      { extends: true, test: { name: 'e2e', include: ['test/**/*.test.ts', ...MOCKING] } },
    ],
  },
});
