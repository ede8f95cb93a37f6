// Single-core crypto and codec rates, in a fresh process: `node bench/crypto.mjs [seconds]` prints one JSON line.
// Each figure: ops counted over ~`seconds` (default 1) after a short warm-up, on a pool of 1,024 distinct 32-byte
// keccak digests (states of one channel at successive versions), one key.
import { randomBytes } from 'node:crypto';
import {
  bestKeccak256,
  loadNativeKeccak,
  nativeSigner,
  nativeVerifier,
  loadNativeSecp,
} from '@trickle/protocol/native';
import { nobleSigner, nobleVerifier, signatureToHex } from '@trickle/protocol/signer';
import { stateDigest, domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { encodeFrame, decodeFrame } from '@trickle/protocol/codec';
import { encodeChannelRecord } from '@trickle/hub/store/types';
import { toAddress, toHex } from '@trickle/protocol/hex';

const SECONDS = Number(process.argv[2] ?? 1);
const key = toHex(randomBytes(32));
const sep = domainSeparator(trickleDomain(31337n, toAddress(`0x${'ab'.repeat(20)}`)));
const channelId = toHex(randomBytes(32));
const states = Array.from({ length: 1024 }, (_, i) => ({
  channelId,
  version: BigInt(i + 1),
  paidByDevice: BigInt(i + 1) * 1000n,
  paidByHub: 0n,
  round: 0n,
  locksRoot: `0x${'00'.repeat(32)}`,
  lockedByDevice: 0n,
  lockedByHub: 0n,
  isFinal: false,
}));
const digests = states.map((s) => stateDigest(sep, s));

/** ops/s of `fn(i)` over ~`seconds`, after a warm-up of a tenth of that. */
function rate(fn, seconds = SECONDS) {
  const run = (ms) => {
    let n = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < ms) {
      for (let k = 0; k < 64; k++) fn(n++ & 1023);
      t = performance.now();
    }
    return { n, s: (t - t0) / 1000 };
  };
  run(seconds * 100);
  const { n, s } = run(seconds * 1000);
  return n / s;
}

const out = { seconds: SECONDS, digestBytes: 32 };
if (loadNativeSecp()) {
  const signer = nativeSigner(key);
  const sigs = digests.map((d) => signer.signDigest(d));
  const verifier = nativeVerifier();
  out.native = {
    signPerSec: rate((i) => signer.signDigest(digests[i])),
    verifyPerSec: rate((i) => {
      if (verifier.recoverAddress(digests[i], sigs[i]) !== signer.address) throw new Error('bad recover');
    }),
  };
  // The binding's own calls, without Trickle's wrapping (signature shape checks, address derivation + EIP-55).
  const secp = loadNativeSecp();
  const keyBytes = Buffer.from(key.slice(2), 'hex');
  const pub = secp.publicKeyCreate(keyBytes, false);
  const raw = sigs.map((s) => s.subarray(0, 64));
  out.nativeRaw = {
    ecdsaSignPerSec: rate((i) => secp.ecdsaSign(digests[i], keyBytes), SECONDS / 2),
    ecdsaRecoverPerSec: rate((i) => secp.ecdsaRecover(raw[i], sigs[i][64] - 27, digests[i], false), SECONDS / 2),
    ecdsaVerifyPerSec: secp.ecdsaVerify
      ? rate((i) => secp.ecdsaVerify(raw[i], digests[i], pub), SECONDS / 2)
      : undefined,
  };
}
{
  const signer = nobleSigner(key);
  const sigs = digests.map((d) => signer.signDigest(d));
  out.noble = {
    signPerSec: rate((i) => signer.signDigest(digests[i]), SECONDS / 2),
    verifyPerSec: rate((i) => {
      if (nobleVerifier.recoverAddress(digests[i], sigs[i]) !== signer.address) throw new Error('bad recover');
    }, SECONDS / 2),
  };
}
// The rest explains where a hub's time goes besides signatures (shorter runs).
// The digest as hub and devices compute it: the compiled keccak when installed (they pass bestKeccak256() too).
const keccak = bestKeccak256();
out.nativeKeccak = loadNativeKeccak() !== undefined;
out.stateDigestPerSec = rate((i) => stateDigest(sep, states[i], keccak), SECONDS / 2);
{
  const sig = nobleSigner(key).signDigest(digests[0]);
  const frames = states.map((s, i) => encodeFrame({ t: 'update', id: i + 1, state: s, sig }));
  out.updateFrameBytes = frames[0].length;
  out.encodeUpdatePerSec = rate((i) => encodeFrame({ t: 'update', id: i + 1, state: states[i], sig }), SECONDS / 4);
  out.decodeUpdatePerSec = rate((i) => decodeFrame(frames[i]), SECONDS / 4);
  const hex = signatureToHex(sig);
  const params = {
    chainId: 31337n,
    adjudicator: toAddress(`0x${'ab'.repeat(20)}`),
    device: toAddress(`0x${'cd'.repeat(20)}`),
    hub: toAddress(`0x${'ef'.repeat(20)}`),
    token: toAddress(`0x${'00'.repeat(20)}`),
    challengeDuration: 3600n,
    salt: channelId,
  };
  out.encodeRecordPerSec = rate(
    (i) =>
      encodeChannelRecord({
        params,
        channelId,
        funding: { device: 10n ** 18n, hub: 0n },
        status: 'open',
        latest: { state: states[i], deviceSig: hex, hubSig: hex },
        hubSignedVersion: states[i].version,
      }), // as the LMDB store writes it
    SECONDS / 4,
  );
}
process.stdout.write(`${JSON.stringify(out)}\n`);
