import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseJson } from '@trickle/protocol/json';

/** The built `trickle` bin. */
export const TRICKLE_BIN = fileURLToPath(new URL('../../packages/cli/dist/bin.js', import.meta.url));

/** What a run of the bin gave: its exit code, its output, and stdout parsed as JSON (undefined when it is not). */
export interface TrickleRun {
  code: number | null;
  stdout: string;
  stderr: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any;
}

/**
 * Runs the bin with `args` and the chain's endpoint and adjudicator in the environment (as an operator's shell would
 * have them; `env` adds to or overrides them), killed after 30 s.
 */
export function runTrickle(
  args: string[],
  chain: { rpcUrl: string; adjudicator: string },
  env: Record<string, string> = {},
): Promise<TrickleRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TRICKLE_BIN, ...args], {
      env: {
        ...process.env,
        TRICKLE_RPC_URL: chain.rpcUrl,
        TRICKLE_ADJUDICATOR: chain.adjudicator,
        TRICKLE_CONFIRMATIONS: '0',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      let json: unknown;
      try {
        json = parseJson(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}
