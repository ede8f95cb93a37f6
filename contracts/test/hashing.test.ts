import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { channelIdOf, domainSeparator, STATE_TYPE, stateDigestHex, trickleDomain } from '@trickle/protocol/eip712';
import { keccakUtf8, toAddress, toBytes32, toHex } from '@trickle/protocol/hex';
import type { ChannelId, ChannelParams, State } from '@trickle/protocol/types';
import { createFixture, type Fixture } from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());

const uint = (bits: number) => fc.bigInt({ min: 0n, max: (1n << BigInt(bits)) - 1n });
const bytes32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => toBytes32(b));
const address = fc.uint8Array({ minLength: 20, maxLength: 20 }).map((b) => toAddress(b));
const stateArb: fc.Arbitrary<State> = fc.record({
  channelId: bytes32.map((b) => b as string as ChannelId),
  version: uint(64),
  paidByDevice: uint(256),
  paidByHub: uint(256),
  round: uint(64),
  locksRoot: bytes32,
  lockedByDevice: uint(256),
  lockedByHub: uint(256),
  isFinal: fc.boolean(),
});

describe('hashing agrees between @trickle/protocol and the adjudicator', () => {
  it('domain separator and State type hash', async () => {
    expect(await fx.adj.domainSeparator()).toBe(
      toHex(domainSeparator(trickleDomain(fx.chain.chainId, fx.adj.address))),
    );
    const typehash = (await fx.adj.contract.getFunction('STATE_TYPEHASH').staticCall()) as string;
    expect(typehash).toBe(toHex(keccakUtf8(STATE_TYPE)));
  });

  it('state digests (random states, full uint ranges)', async () => {
    await fc.assert(
      fc.asyncProperty(stateArb, async (state) => {
        expect(await fx.adj.stateDigest(state)).toBe(stateDigestHex(fx.sep, state));
      }),
      { numRuns: 60 },
    );
  });

  it('channel ids (random params)', async () => {
    const paramsArb: fc.Arbitrary<ChannelParams> = fc.record({
      chainId: uint(256),
      adjudicator: address,
      device: address,
      hub: address,
      token: address,
      challengeDuration: uint(64),
      salt: bytes32,
    });
    await fc.assert(
      fc.asyncProperty(paramsArb, async (params) => {
        expect(await fx.adj.channelIdOf(params)).toBe(channelIdOf(params));
      }),
      { numRuns: 40 },
    );
  });
});
