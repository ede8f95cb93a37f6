import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { keccak256 as ethersKeccak } from 'ethers';
import { keccak256, toHex, toAddress } from './hex.js';
import { channelIdOf, domainSeparator, stateDigest, trickleDomain } from './eip712.js';
import { bestKeccak256, loadNativeKeccak } from './native.js';
import type { ChannelParams, State } from './types.js';

const vec = (name: string) =>
  JSON.parse(readFileSync(new URL(`../../../protocol-spec/vectors/${name}`, import.meta.url), 'utf8'));

describe('native keccak-256', () => {
  it('is installed here (hub and devices use it for state digests)', () => {
    expect(loadNativeKeccak()).toBeTypeOf('function');
  });
  it('is byte-identical to @noble/hashes and ethers on inputs of every length around the rate (0..600 bytes)', () => {
    const native = loadNativeKeccak()!;
    for (let len = 0; len <= 600; len++) {
      const data = Uint8Array.from({ length: len }, (_, i) => (i * 31 + len * 7) & 0xff);
      const got = native(data);
      expect(got).toBeInstanceOf(Uint8Array);
      expect(got.length).toBe(32);
      expect(toHex(got)).toBe(toHex(keccak_256(data)));
      if (len % 50 === 0) expect(toHex(got)).toBe(ethersKeccak(data));
    }
    // A view into a larger buffer hashes only its own bytes.
    const big = new Uint8Array(300).fill(9);
    expect(toHex(native(big.subarray(100, 164)))).toBe(toHex(keccak_256(big.subarray(100, 164))));
  });
  it('bestKeccak256() picks it, and state digests through it match every vector; nothing global changes', () => {
    const keccak = bestKeccak256();
    expect(keccak).toBe(loadNativeKeccak());
    for (const v of vec('channel-ids.json').vectors) {
      expect(
        channelIdOf({
          ...v.params,
          chainId: BigInt(v.params.chainId),
          challengeDuration: BigInt(v.params.challengeDuration),
        } as ChannelParams),
      ).toBe(v.channelId);
    }
    for (const v of vec('signed-states.json').vectors) {
      const m = v.message;
      const state = {
        ...m,
        version: BigInt(m.version),
        paidByDevice: BigInt(m.paidByDevice),
        paidByHub: BigInt(m.paidByHub),
        round: BigInt(m.round),
        lockedByDevice: BigInt(m.lockedByDevice),
        lockedByHub: BigInt(m.lockedByHub),
      } as State;
      const sep = domainSeparator(trickleDomain(BigInt(v.domain.chainId), v.domain.verifyingContract));
      expect(toHex(stateDigest(sep, state, keccak))).toBe(v.digest);
      expect(toHex(stateDigest(sep, state))).toBe(v.digest);
      expect(toAddress(v.signer.toLowerCase())).toBe(v.signer);
    }
    expect(toHex(keccak256(new Uint8Array()))).toBe(
      '0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470',
    );
    // The default stays the pure-JS one: choosing a backend is local to the call that passes it.
    const calls: number[] = [];
    const counting = (d: Uint8Array) => (calls.push(d.length), keccak(d));
    const v = vec('signed-states.json').vectors[0];
    const m = v.message;
    const state = {
      ...m,
      version: BigInt(m.version),
      paidByDevice: BigInt(m.paidByDevice),
      paidByHub: BigInt(m.paidByHub),
      round: BigInt(m.round),
      lockedByDevice: BigInt(m.lockedByDevice),
      lockedByHub: BigInt(m.lockedByHub),
    } as State;
    const sep = domainSeparator(trickleDomain(BigInt(v.domain.chainId), v.domain.verifyingContract));
    expect(toHex(stateDigest(sep, state, counting))).toBe(v.digest);
    expect(calls).toEqual([320, 66]);
    stateDigest(sep, state);
    expect(calls).toHaveLength(2);
  });
});
