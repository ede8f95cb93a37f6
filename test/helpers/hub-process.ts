// Runs the `trickle-hub` bin as a child process, as an operator would.
import { createServer } from 'node:net';
import { spawnHub, type HubProcess as Spawned } from '@trickle/hub/spawn';

export interface HubProcess {
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

export async function startHubProcess(args: {
  rpc: string;
  adjudicator: string;
  keyFile: string;
  store: string;
  port: number;
  extra?: string[];
}): Promise<HubProcess> {
  const hub: Spawned = await spawnHub([
    '--rpc',
    args.rpc,
    '--adjudicator',
    args.adjudicator,
    '--key-file',
    args.keyFile,
    '--store',
    args.store,
    '--port',
    String(args.port),
    '--poll-ms',
    '200',
    '--min-challenge-seconds', // tests open channels with challenge periods of seconds
    '1',
    '--log-level',
    'warn',
    ...(args.extra ?? []),
  ]);
  return { url: hub.url, port: args.port, kill: (signal = 'SIGKILL') => hub.kill(signal) };
}
