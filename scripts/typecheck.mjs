// Type-checks the tests and every package's sources with their test files (`npm run typecheck`): one `tsc -p` per
// project, two at a time (each is single-threaded; run one after another they took ~50 s of the CI's 20 minutes).
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';

const PROJECTS = [
  'test',
  'contracts',
  ...['protocol', 'market', 'chain', 'devchain', 'client', 'hub', 'cli', 'x402'].map(
    (p) => `packages/${p}/tsconfig.test.json`,
  ),
];
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

/** Runs `tsc -p project`, resolving with its exit code and output (printed whole, not interleaved with another's). */
const check = (project) =>
  new Promise((resolve) => {
    const child = spawn(process.execPath, [tsc, '-p', project], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ project, code: code ?? 1, out }));
  });

const queue = [...PROJECTS];
const failed = [];
const worker = async () => {
  for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
    const r = await check(p);
    if (r.out) process.stdout.write(r.out);
    if (r.code !== 0) failed.push(r.project);
  }
};
await Promise.all(Array.from({ length: Math.min(2, availableParallelism()) }, worker));
if (failed.length > 0) {
  console.error(`typecheck failed: ${failed.join(', ')}`);
  process.exit(1);
}
