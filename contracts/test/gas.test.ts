import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

describe('gas', () => {
  it('contracts/GAS.md (the figures README and bench report) is what each operation costs on the compiled bytecode now', () => {
    // scripts/gas.mjs runs every adjudicator operation on an in-process EDR chain and compares the table it builds
    // with the committed one; a change to the contracts that moves gas fails here until `npm run gas` is run.
    const r = spawnSync(process.execPath, ['scripts/gas.mjs', '--check'], {
      cwd: root,
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.stderr + r.stdout).toContain('contracts/GAS.md matches the compiled adjudicator');
    expect(r.status).toBe(0);
  }, 150_000);
});
