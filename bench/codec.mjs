// Wire codec rates, one core, in a fresh process: `node bench/codec.mjs [seconds]` prints one JSON line.
// decode/s and encode/s of the frames a hub reads and writes most (update, ack, sync with a signed state), each the
// median of 5 runs of ~`seconds`/5 (default 2 s in all per figure) over 1,024 distinct frames. Needs `tsc -b` first.
import { randomBytes } from 'node:crypto';
import { encodeFrame, decodeFrame } from '@trickle/protocol/codec';
import { toHex } from '@trickle/protocol/hex';
import * as types from '@trickle/protocol/types';

const SECONDS = Number(process.argv[2] ?? 2);
const channelId = toHex(randomBytes(32));
const sig = new Uint8Array(randomBytes(65));
const sigHex = toHex(sig);
const states = Array.from({ length: 1024 }, (_, i) => ({
  channelId,
  version: BigInt(i + 1),
  paidByDevice: BigInt(i + 1) * 1_000_000_000_000n,
  paidByHub: 0n,
  round: 0n,
  ...(types.NO_LOCKS ?? {}), // the lock fields, where the State has them
  isFinal: false,
}));
const messages = {
  update: states.map((state, i) => ({ t: 'update', id: i + 1, state, sig })),
  ack: states.map((s, i) => ({ t: 'ack', id: i + 1, channelId, version: s.version, sig })),
  sync: states.map((state, i) => ({
    t: 'sync',
    id: i + 1,
    channelId,
    latest: { state, deviceSig: sigHex, hubSig: sigHex },
  })),
};

function rate(fn, seconds) {
  const once = (ms) => {
    let n = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < ms) {
      for (let k = 0; k < 64; k++) fn(n++ & 1023);
      t = performance.now();
    }
    return n / ((t - t0) / 1000);
  };
  once(200);
  const runs = Array.from({ length: 5 }, () => once((seconds * 1000) / 5)).sort((a, b) => a - b);
  return Math.round(runs[2]);
}

const out = { seconds: SECONDS };
for (const [t, msgs] of Object.entries(messages)) {
  const frames = msgs.map((m) => encodeFrame(m));
  out[t] = {
    bytes: frames[0].length,
    decodePerSec: rate((i) => decodeFrame(frames[i]), SECONDS),
    encodePerSec: rate((i) => encodeFrame(msgs[i]), SECONDS / 2),
  };
}
process.stdout.write(`${JSON.stringify(out)}\n`);
