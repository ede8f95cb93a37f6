import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChain, openChannels, deviceKey, startHubProcess } from './lib/world.mjs';
import { runHubLoad } from './lib/hub-load.mjs';
const N = Number(process.argv[2] ?? 1000);
const W = Number(process.argv[3] ?? 1);
const dir = mkdtempSync(join(tmpdir(), 'trickle-bench-'));
const t0 = performance.now();
const { server, adjudicator } = await startChain();
let hub;
try {
  const keys = Array.from({ length: N }, (_, i) => deviceKey('hub', i));
  const devices = await openChannels(server, adjudicator, keys, { deposit: 10n ** 18n, group: 'hub' });
  console.log('opened', performance.now() - t0);
  hub = await startHubProcess({ rpc: server.url, adjudicator: adjudicator.address, hubKey: server.accounts[1], dir, nodeArgs: process.env.PROF ? ['--cpu-prof', '--cpu-prof-dir', '/tmp/prof'] : [] });
  const r = await runHubLoad({ hub, devices, settings: [1, 100, N].filter((x, i, a) => x <= N && a.indexOf(x) === i), warmupMs: 1000, measureMs: 3000, window: W, log: console.log });
  console.log(JSON.stringify(r, null, 1));
} finally {
  await hub?.stop();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
  console.log('total', performance.now() - t0);
}
