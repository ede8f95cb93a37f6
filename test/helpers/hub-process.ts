// Runs the `trickle-hub` bin as a child process, as an operator would.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

export const HUB_BIN = fileURLToPath(new URL('../../packages/hub/dist/bin.js', import.meta.url));

export interface HubProcess {
  readonly child: ChildProcess;
  readonly url: string;
  readonly port: number;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A free TCP port on loopback. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

export async function startHubProcess(args: { rpc: string; adjudicator: string; keyFile: string; store: string; port: number; extra?: string[] }): Promise<HubProcess> {
  const child = spawn(
    process.execPath,
    [HUB_BIN, '--rpc', args.rpc, '--adjudicator', args.adjudicator, '--key-file', args.keyFile, '--store', args.store, '--port', String(args.port), '--poll-ms', '200', '--log-level', 'warn', ...(args.extra ?? [])],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`hub did not start: ${stderr}`)), 20_000);
    child.stdout!.on('data', (d) => {
      out += String(d);
      const line = out.split('\n').find((l) => l.includes('"listening"'));
      if (line) {
        clearTimeout(timer);
        resolve(JSON.parse(line).url);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`hub exited with ${code}: ${stderr}`));
    });
  });
  return {
    child,
    url,
    port: args.port,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await done;
    },
  };
}
