import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TrickleError } from '@trickle/protocol/errors';

/** Path of the `trickle-hub` program (dist/bin.js). */
export const HUB_BIN: string = fileURLToPath(new URL('./bin.js', import.meta.url)).replace(
  /([\\/])src([\\/])bin\.js$/,
  '$1dist$2bin.js',
);

/**
 * Node flags the `trickle-hub` command runs with (its bin's shebang), and {@link spawnHub} gives before its own
 * `nodeArgs` (a later flag wins). `--max-semi-space-size=2`: a young generation of 2 MiB instead of V8's 16. A hub's
 * garbage is short-lived, yet each scavenge of a 16 MiB young generation held its event loop ~4 ms (1 ms at 2 MiB, four
 * times as often, twice the GC CPU: ~1% of a core), and a payment arriving meanwhile waits that long: `npm run bench --
 * --only stream` p99 lower by 12–28% in each of six alternating pairs of runs with both sides at 2 MiB against V8's
 * default (README, Benchmarks); the hub's signed updates per second are unchanged (`--only hub`). Run `node dist/bin.js` yourself? Give it
 * these.
 */
export const HUB_NODE_ARGS: readonly string[] = ['--max-semi-space-size=2'];

/** A hub running as its own process. */
export interface HubProcess {
  readonly child: ChildProcess;
  /** ws://host:port/ from the hub's `listening` line. */
  readonly url: string;
  /** The last 8 KiB of its stderr. */
  stderr(): string;
  /** SIGTERM (the hub closes its store and exits), SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  /** Send a signal and wait for the exit (tests use SIGKILL to crash it). */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Start `trickle-hub` with `args` (its flags) and wait for its `listening` line — what supervisors, the benchmark
 * and the crash tests do.
 * @throws TrickleError('TIMEOUT') when it does not listen in time; ('INTERNAL') when it exits first (stderr in the message)
 * @example
 * ```ts
 * const hub = await spawnHub(['--rpc', url, '--adjudicator', adj, '--key-file', 'hub.key', '--store', './store', '--port', '0']);
 * ```
 */
export async function spawnHub(
  args: readonly string[],
  opts: { nodeArgs?: readonly string[]; startupTimeoutMs?: number } = {},
): Promise<HubProcess> {
  const child = spawn(process.execPath, [...HUB_NODE_ARGS, ...(opts.nodeArgs ?? []), HUB_BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-8192)));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new TrickleError('TIMEOUT', `hub did not start: ${stderr}`));
    }, opts.startupTimeoutMs ?? 20_000);
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const line = out.split('\n').find((l) => l.includes('"listening"'));
      if (line) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { url: string }).url);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new TrickleError('INTERNAL', `hub exited with ${code}: ${stderr}`));
    });
  });
  child.stdout!.resume();
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (exited()) return;
    const done = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    await done;
  };
  return {
    child,
    url,
    stderr: () => stderr,
    kill,
    async stop(graceMs = 10_000) {
      if (exited()) return;
      const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await kill('SIGTERM');
      clearTimeout(killer);
    },
  };
}
