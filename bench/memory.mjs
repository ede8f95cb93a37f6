// Hub heap per open idle channel, the way a restarted hub holds them: `node --expose-gc bench/memory.mjs [n]`
// prints one JSON line. n (default 10,000) synthetic channel records, each with a fully signed latest state (device
// and hub signatures made with the native signer), go through the store's record encoding (JSON, as LMDB keeps them,
// decoded with the store's own `decodeRecord`) into `ChannelTable.restore`. heapUsed is read after full GCs before
// the records exist and after the table holds them (the decode buffers and the input array dropped). Restored
// channels whose devices are offline are kept packed (packages/hub/src/idle-record.ts), so the table holds less than
// the decoded records did. liveBytesPerChannel: the same channels once their devices are connected (each woken into
// its engine value by a no-op chain job; an 8-byte slot per channel for the ids array is left out).
import { randomBytes } from 'node:crypto';
import { ChannelTable } from '@trickle/hub/channels';
import { decodeRecord, encodeChannelRecord } from '@trickle/hub/store/types';
import { createCommitter } from '@trickle/hub/committer';
import { inlineCrypto } from '@trickle/hub/crypto';
import { nativeSigner, nativeVerifier } from '@trickle/protocol/native';
import { channelIdOf, domainSeparator, stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { signatureToHex } from '@trickle/protocol/signer';
import { toAddress, toHex } from '@trickle/protocol/hex';
import { ETH_TOKEN } from '@trickle/protocol/types';

if (typeof globalThis.gc !== 'function') throw new Error('run with node --expose-gc');
const N = Number(process.argv[2] ?? 10_000);
let online = false;
const chainId = 31337n;
const adjudicator = toAddress(toHex(randomBytes(20)));
const hubSigner = nativeSigner(toHex(randomBytes(32)));
const sep = domainSeparator(trickleDomain(chainId, adjudicator));

const verifier = nativeVerifier();
const table = new ChannelTable({
  crypto: inlineCrypto(hubSigner, verifier),
  verifier,
  committer: createCommitter({ commit: async () => {} }),
  send: () => false,
  isConnected: () => online,
});

function settle() {
  for (let k = 0; k < 4; k++) globalThis.gc();
  return process.memoryUsage().heapUsed;
}

/** One record as the hub stores it after some traffic: both signatures over its latest state. */
function record(i) {
  const device = nativeSigner(toHex(randomBytes(32)));
  const params = {
    chainId,
    adjudicator,
    device: device.address,
    hub: hubSigner.address,
    token: ETH_TOKEN,
    challengeDuration: 3600n,
    salt: toHex(randomBytes(32)),
  };
  const channelId = channelIdOf(params);
  const state = {
    channelId,
    version: BigInt(1000 + i),
    paidByDevice: BigInt(1_000_000 + i * 7),
    paidByHub: BigInt(i * 3),
    round: BigInt(i % 50),
    locksRoot: `0x${'00'.repeat(32)}`,
    lockedByDevice: 0n,
    lockedByHub: 0n,
    isFinal: false,
  };
  const digest = stateDigest(sep, state);
  const r = {
    params,
    channelId,
    funding: { device: 10n ** 18n, hub: 5n * 10n ** 17n },
    status: 'open',
    latest: {
      state,
      deviceSig: signatureToHex(device.signDigest(digest)),
      hubSig: signatureToHex(hubSigner.signDigest(digest)),
    },
    hubSignedVersion: state.version,
  };
  return decodeRecord(encodeChannelRecord(r)); // the bytes LMDB holds, decoded as `loadChannels` does
}

const before = settle();
let records = [];
for (let i = 0; i < N; i++) records.push(record(i));
const decoded = settle(); // the records alone (plus an 8-byte slot each in the input array)
table.restore(records);
records = undefined;
const after = settle();
if (table.size !== N) throw new Error(`table holds ${table.size} channels, expected ${N}`);
const perChannel = (after - before) / N;
// Live: the devices connect; each channel is woken (a chain job with no change) and stays so while its device is.
online = true;
const ids = [];
for (const r of table.records()) ids.push(r.channelId); // the table's own id strings
await Promise.all(ids.map((id) => table.onChain(id, {})));
await new Promise((resolve) => setImmediate(resolve));
const live = settle();
process.stdout.write(
  `${JSON.stringify({ channels: N, heapBefore: before, heapAfter: after, bytesPerChannel: Math.round(perChannel), recordBytesPerChannel: Math.round((decoded - before) / N - 8), tableOverheadBytesPerChannel: Math.round((after - decoded) / N + 8), liveBytesPerChannel: Math.round((live - before) / N - 8), encodedRecordBytes: encodeChannelRecord(record(0)).length })}\n`,
);
