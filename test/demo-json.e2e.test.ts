import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * `npm run demo -- --json | jq` works: stdout is exactly one JSON object. npm's run banner goes to stderr (the
 * repository's .npmrc sets `json=true`, which moves it there) and the build step writes to stderr.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));

describe('npm run demo -- --json', () => {
  it('prints only the summary object on stdout', async () => {
    const child = spawn('npm', ['run', 'demo', '--', '--json', '--seconds', '2'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code, stderr.slice(-2_000)).toBe(0);
    const summary = JSON.parse(stdout) as {
      reconciled: boolean;
      channels: number;
      payoutsTotal: string;
      depositsTotal: string;
    };
    expect(summary).toMatchObject({ reconciled: true, channels: 50 });
    expect(summary.payoutsTotal).toBe(summary.depositsTotal);
    expect(stderr).toMatch(/> .*demo/); // the banner is there, on stderr
  }, 170_000);
});
