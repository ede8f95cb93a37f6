import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { HUB_NODE_ARGS } from './spawn.js';

const SHIM = fileURLToPath(new URL('../bin/trickle-hub.js', import.meta.url));

/** The young generation (new space) of a node process started with `flags`, in bytes, once grown. */
const newSpace = (flags: readonly string[]) =>
  Number(
    execFileSync(process.execPath, [
      ...flags,
      '-e',
      // Garbage with some survivors first: V8 grows the young generation up to its bound under allocation.
      'let k = []; for (let i = 0; i < 3e6; i++) { k.push({ a: i, b: [i] }); if (k.length > 1000) k = []; }' +
        "process.stdout.write(String(require('node:v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size))",
    ]),
  );

describe("the hub process's node flags", () => {
  it('the trickle-hub command runs node with them (its shebang), and runs', () => {
    const shebang = readFileSync(SHIM, 'utf8').split('\n')[0]!;
    expect(shebang).toBe(`#!/usr/bin/env -S node ${HUB_NODE_ARGS.join(' ')}`);
    expect(execFileSync(SHIM, ['--help'], { encoding: 'utf8' })).toContain('Usage: trickle-hub');
  });

  it('they make the young generation smaller than V8 makes it by itself', () => {
    // A scavenge's pause grows with the young generation (see HUB_NODE_ARGS): 2 MiB semi-spaces, not 16.
    expect(newSpace(HUB_NODE_ARGS)).toBeLessThan(newSpace([]));
    expect(newSpace(HUB_NODE_ARGS)).toBeLessThanOrEqual(4 * 1024 * 1024);
  });
});
