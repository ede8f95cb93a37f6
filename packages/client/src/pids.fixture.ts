import { spawnSync } from 'node:child_process';
import { expect } from 'vitest';

/** The id of a process that has exited (a real one, waited for: not a guess). */
export function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const pid = Number(child.stdout);
  expect(Number.isSafeInteger(pid) && pid > 0).toBe(true);
  return pid;
}
