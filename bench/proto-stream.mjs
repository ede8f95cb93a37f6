import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChain, openChannels, deviceKey, startHubProcess } from './lib/world.mjs';
import { runStream } from './lib/stream-load.mjs';
const D = Number(process.argv[2] ?? 8);
const P = Number(process.argv[3] ?? 1);
const outs = (process.argv[4] ?? '64,256,1024').split(',').map(Number);
const dir = mkdtempSync(join(tmpdir(), 'trickle-bench-'));
const { server, adjudicator } = await startChain();
let hub;
try {
  const keys = Array.from({ length: D }, (_, i) => deviceKey('stream', i));
  const devices = await openChannels(server, adjudicator, keys, { deposit: 10n ** 18n, group: 'stream' });
  hub = await startHubProcess({ rpc: server.url, adjudicator: adjudicator.address, hubKey: server.accounts[1], dir, nodeArgs: process.env.PROF ? ['--cpu-prof', '--cpu-prof-dir', '/tmp/prof'] : [] });
  const r = await runStream({ hub, devices, deposit: 10n ** 18n, dir, processes: P, outstanding: outs, warmupMs: 500, measureMs: 2000, log: console.log });
  console.log(JSON.stringify(r, null, 1));
} finally {
  await hub?.stop();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
