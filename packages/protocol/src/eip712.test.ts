import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { AbiCoder, TypedDataEncoder, keccak256 as ethersKeccak, recoverAddress, Wallet } from 'ethers';
import { channelIdOf, domainSeparator, stateDigest, trickleDomain, STATE_TYPES, authDigest } from './eip712.js';
import { nobleSigner, nobleVerifier } from './signer.js';
import { nativeSigner, nativeVerifier } from './native.js';
import { toHex, fromHex } from './hex.js';
import { decodeFrame, type Message } from './codec.js';
import type { ChannelParams, State } from './types.js';

const vec = (name: string) =>
  JSON.parse(readFileSync(new URL(`../../../protocol-spec/vectors/${name}`, import.meta.url), 'utf8'));
const big = (o: Record<string, unknown>, keys: string[]) => ({
  ...o,
  ...Object.fromEntries(keys.map((k) => [k, BigInt(o[k] as string)])),
});

describe('EIP-712 vectors', () => {
  it('channel ids match abi.encode + keccak (ethers AbiCoder)', () => {
    for (const v of vec('channel-ids.json').vectors) {
      const p = big(v.params, ['chainId', 'challengeDuration']) as unknown as ChannelParams;
      expect(channelIdOf(p)).toBe(v.channelId);
      const enc = AbiCoder.defaultAbiCoder().encode(
        ['uint256', 'address', 'address', 'address', 'address', 'uint64', 'bytes32'],
        [p.chainId, p.adjudicator, p.device, p.hub, p.token, p.challengeDuration, p.salt],
      );
      expect(ethersKeccak(enc)).toBe(v.channelId);
    }
  });

  const signed = vec('signed-states.json').vectors as any[];
  it('has vectors with every field EIP-712 tools need', () => {
    expect(signed.length).toBeGreaterThanOrEqual(5);
    for (const v of signed)
      for (const k of ['domain', 'types', 'primaryType', 'message', 'digest', 'signer', 'signature'])
        expect(v).toHaveProperty(k);
  });

  for (const [i, v] of signed.entries()) {
    it(`signed state #${i}: digest and signature agree across noble, libsecp256k1 and ethers`, () => {
      const state = big(v.message, [
        'version',
        'paidByDevice',
        'paidByHub',
        'round',
        'lockedByDevice',
        'lockedByHub',
      ]) as unknown as State;
      const domain = trickleDomain(BigInt(v.domain.chainId), v.domain.verifyingContract);
      const digest = stateDigest(domainSeparator(domain), state);
      expect(toHex(digest)).toBe(v.digest);
      expect(TypedDataEncoder.hash(v.domain, v.types, v.message)).toBe(v.digest);
      expect(TypedDataEncoder.hash(v.domain, STATE_TYPES as any, state)).toBe(v.digest);
      expect(toHex(nobleSigner(v.privateKey).signDigest(digest))).toBe(v.signature);
      expect(toHex(nativeSigner(v.privateKey).signDigest(digest))).toBe(v.signature);
      expect(nobleVerifier.recoverAddress(digest, fromHex(v.signature))).toBe(v.signer);
      expect(nativeVerifier().recoverAddress(digest, fromHex(v.signature))).toBe(v.signer);
      expect(recoverAddress(v.digest, v.signature)).toBe(v.signer);
    });
  }

  it('a signature does not carry over to another chain, adjudicator or channel', () => {
    const v = signed[0];
    const state = big(v.message, [
      'version',
      'paidByDevice',
      'paidByHub',
      'round',
      'lockedByDevice',
      'lockedByHub',
    ]) as unknown as State;
    const sig = fromHex(v.signature);
    const variants = [
      stateDigest(domainSeparator(trickleDomain(BigInt(v.domain.chainId) + 1n, v.domain.verifyingContract)), state),
      stateDigest(
        domainSeparator(trickleDomain(BigInt(v.domain.chainId), '0x000000000000000000000000000000000000dEaD' as never)),
        state,
      ),
      stateDigest(domainSeparator(trickleDomain(BigInt(v.domain.chainId), v.domain.verifyingContract)), {
        ...state,
        channelId: ('0x' + '00'.repeat(32)) as never,
      }),
    ];
    for (const d of variants) expect(nobleVerifier.recoverAddress(d, sig)).not.toBe(v.signer);
  });

  it('auth digest matches ethers', async () => {
    const w = new Wallet('0x' + '11'.repeat(32));
    const hub = '0x1563915e194D8CfBA1943570603F7606A3115508';
    const nonce = '0x' + '5a'.repeat(32);
    const domain = {
      name: 'Trickle',
      version: '1',
      chainId: 31337n,
      verifyingContract: '0x5FbDB2315678afecb367f032d93F642f64180aa3',
    };
    const types = {
      Auth: [
        { name: 'device', type: 'address' },
        { name: 'hub', type: 'address' },
        { name: 'nonce', type: 'bytes32' },
      ],
    };
    const expected = TypedDataEncoder.hash(domain, types, { device: w.address, hub, nonce });
    expect(toHex(authDigest(domainSeparator(domain as never), w.address as never, hub as never, nonce as never))).toBe(
      expected,
    );
  });
});

describe('frames.json signatures', () => {
  // A firmware author checks its own signing against these: each is its sender's, and both backends make it.
  const keys = vec('keys.json').keys as Record<'device' | 'hub', { privateKey: `0x${string}`; address: string }>;
  const frames = (vec('frames.json').vectors as { frame: string }[]).map((v) => decodeFrame(fromHex(v.frame)));
  const challenge = frames.find((m) => m.t === 'challenge') as Extract<Message, { t: 'challenge' }>;
  const sep = domainSeparator(trickleDomain(challenge.chainId, challenge.adjudicator));
  const expectBy = (role: 'device' | 'hub', digest: Uint8Array, sig: Uint8Array | string) => {
    const bytes = typeof sig === 'string' ? fromHex(sig) : sig;
    expect(toHex(nobleSigner(keys[role].privateKey).signDigest(digest))).toBe(toHex(bytes));
    expect(toHex(nativeSigner(keys[role].privateKey).signDigest(digest))).toBe(toHex(bytes));
    expect(nativeVerifier().recoverAddress(digest, bytes)).toBe(keys[role].address);
  };
  it('auth, update, close, ack and the signed states of reject and sync are their senders’ real signatures', () => {
    let checked = 0;
    const states = new Map<bigint, State>();
    for (const m of frames) {
      if (m.t === 'auth') expectBy('device', authDigest(sep, m.device, challenge.hub, m.nonce), m.sig);
      else if (m.t === 'update' || m.t === 'close') {
        expectBy('device', stateDigest(sep, m.state), m.sig!); // (a close frame may come unsigned: none does here)
        if (m.t === 'close' || (!m.lock && !m.unlock)) states.set(m.state.version, m.state);
      } else if (m.t === 'ack') expectBy('hub', stateDigest(sep, states.get(m.version)!), m.sig);
      else if ((m.t === 'reject' || m.t === 'sync') && m.latest) {
        expectBy('device', stateDigest(sep, m.latest.state), m.latest.deviceSig!);
        expectBy('hub', stateDigest(sep, m.latest.state), m.latest.hubSig!);
      } else continue;
      checked++;
    }
    expect(checked).toBeGreaterThanOrEqual(12);
  });
});
