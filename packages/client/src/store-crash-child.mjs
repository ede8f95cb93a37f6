// Child process of store.test.ts ("a SIGKILL at any point ..."): saves versions start, start+1, … of one channel
// with the BUILT store (`@trickle/client/store`, i.e. dist/: run `tsc -b` first) and prints each version on stdout
// once its save has resolved. Bounded in count and time; the test kills it long before either bound.
// Usage: node store-crash-child.mjs <dir> <start> <count> <ms>
import { fileChannelStore } from '@trickle/client/store';

const [dir, startArg, countArg, msArg] = process.argv.slice(2);
const start = BigInt(startArg ?? '1');
const count = Number(countArg ?? '2000');
const deadline = Date.now() + Number(msArg ?? '20000');
const id = `0x${'ab'.repeat(32)}`;
const rec = (version) => ({
  params: {
    chainId: 1n,
    adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3',
    device: '0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A',
    hub: '0x1563915e194D8CfBA1943570603F7606A3115508',
    token: '0x0000000000000000000000000000000000000000',
    challengeDuration: 60n,
    salt: `0x${'00'.repeat(32)}`,
  },
  channelId: id,
  funding: { device: 10n, hub: 0n },
  latest: { state: { channelId: id, version, paidByDevice: (1n << 200n) + version, paidByHub: 0n, round: 0n, isFinal: false }, deviceSig: `0x${'11'.repeat(65)}`, hubSig: `0x${'22'.repeat(65)}` },
  signedVersion: version,
});

const store = fileChannelStore(dir);
for (let v = start; v < start + BigInt(count) && Date.now() < deadline; v++) {
  await store.save(rec(v));
  process.stdout.write(`${v}\n`); // a pipe: written synchronously on Linux
}
await store.close();
