import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseJson } from '@trickle/protocol/json';

/** The CLI state directory the bins of this test process get (`TRICKLE_STATE_DIR`). */
const STATE_DIR = mkdtempSync(join(tmpdir(), 'trickle-cli-state-'));

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
    const child = spawnBin(args, chain, env);
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

function spawnBin(
  args: string[],
  chain: { rpcUrl: string; adjudicator: string },
  env: Record<string, string>,
): ChildProcessByStdio<null, Readable, Readable> {
  return spawn(process.execPath, [TRICKLE_BIN, ...args], {
    env: {
      ...process.env,
      TRICKLE_RPC_URL: chain.rpcUrl,
      TRICKLE_ADJUDICATOR: chain.adjudicator,
      TRICKLE_CONFIRMATIONS: '0',
      // The commands' memory of stuck transactions (a directory per chain id and account): one per test process, so
      // that tests on other development chains with the same id and accounts do not share it.
      TRICKLE_STATE_DIR: STATE_DIR,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** A long-running bin (`trickle watch --json`, …) and what it has printed so far. */
export interface TrickleProcess {
  child: ChildProcessByStdio<null, Readable, Readable>;
  /** Each line of stdout parsed as JSON, as it arrives. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  lines: Record<string, any>[];
  /** Its stderr so far. */
  readonly stderr: string;
  /** Its exit code, once it exits. */
  exited: Promise<number | null>;
}

/**
 * Starts the bin with `args` in the environment runTrickle gives it, reading its stdout as JSON lines. The caller
 * stops it (`child.kill`) and awaits `exited`.
 */
export function spawnTrickle(
  args: string[],
  chain: { rpcUrl: string; adjudicator: string },
  env: Record<string, string> = {},
): TrickleProcess {
  const child = spawnBin(args, chain, env);
  const lines: TrickleProcess['lines'] = [];
  let stderr = '';
  let buffered = '';
  child.stderr.on('data', (d) => (stderr += String(d)));
  child.stdout.on('data', (d) => {
    buffered += String(d);
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    for (const p of parts) lines.push(JSON.parse(p));
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child,
    lines,
    get stderr() {
      return stderr;
    },
    exited,
  };
}

/** `trickle watch` flags for a test: its API on a free port (the `started` line names it), polling every `ms`. */
export const watchTestFlags = (ms: number): string[] => [
  '--listen',
  '0',
  '--poll-ms',
  String(ms),
  '--store-poll-ms',
  String(ms),
];
