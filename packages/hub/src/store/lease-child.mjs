// Child process of postgres.test.ts: one hub process's writer in a cluster. Opens the BUILT PostgreSQL store with
// leases, takes the lease of one channel, then commits that channel's record at versions 1, 2, 3… (20 ms apart),
// printing `ok <k>` once commit k resolved, `fenced <k>` when it was refused for want of the lease, or `failed <k>`
// when a connection the pause broke failed it (at most 5); it exits after three refusals.
// Usage: node lease-child.mjs <postgres://url> <channelId> <leaseMs>
import { openPostgresStore } from '@trickle/hub/store/postgres';
import { fencedChannels } from '@trickle/hub/leases';

const [url, channelId, leaseMs] = process.argv.slice(2);
const device = '0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A';
const store = openPostgresStore({ url, cluster: { leaseMs: Number(leaseMs), url: 'ws://child.invalid/' } });
await store.leases.acquire(channelId, device, 0);
const record = (version) => ({
  params: {
    chainId: 31337n,
    adjudicator: device,
    device,
    hub: device,
    token: device,
    challengeDuration: 60n,
    salt: channelId,
  },
  channelId,
  funding: { device: 100n, hub: 0n },
  status: 'open',
  latest: { state: { channelId, version, paidByDevice: version, paidByHub: 0n, round: 0n, isFinal: false } },
  hubSignedVersion: version,
});
let refused = 0;
let failed = 0;
for (let k = 1n; refused < 3; k++) {
  try {
    await store.commit([{ kind: 'channel', record: record(k) }]);
    process.stdout.write(`ok ${k}\n`);
  } catch (e) {
    if (!fencedChannels(e)?.has(channelId)) {
      // A connection the pause broke (the server or a timer of the driver may drop it while the process is stopped)
      // fails its commit with a plain STORE_FAILURE: nothing was written, and the pool replaces the connection.
      if (e?.code !== 'STORE_FAILURE' || ++failed > 5) throw e;
      process.stdout.write(`failed ${k}\n`);
      continue;
    }
    refused++;
    process.stdout.write(`fenced ${k}\n`);
  }
  await new Promise((r) => setTimeout(r, 20));
}
await store.close();
