// For crash tests: runs `node <script> ...args`, collects the lines it prints, and SIGKILLs it once it has printed
// more than `lines` of them (or lets it end on its own). A child prints a line only after the step it names is done
// (a save resolved, a commit durable), so the last line is a lower bound on what must survive the kill.
import { spawn } from 'node:child_process';

/** @returns the child's stdout lines (trimmed, empty ones dropped) and its stderr, once it has exited */
export async function killAfterLines(script, args, lines) {
  const proc = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d.toString()));
  const exited = new Promise((resolve) => proc.on('exit', () => resolve()));
  proc.stdout.on('data', (d) => {
    out += d.toString();
    if (out.split('\n').length > lines) proc.kill('SIGKILL');
  });
  await exited;
  return {
    lines: out
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean),
    stderr,
  };
}
