import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MalformedError } from '@trickle/protocol/errors';
import { parseJson, stringifyJson } from '@trickle/protocol/json';
import { toAddress } from '@trickle/protocol/hex';
import type { Bytes32, ChannelId, ChannelParams, SignatureHex, SignedState } from '@trickle/protocol/types';
import { parseSubmission } from './submission.js';

const hex = (bytes: number) =>
  fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => `0x${Buffer.from(b).toString('hex')}`);
const u = (bits: bigint) => fc.bigInt({ min: 0n, max: (1n << bits) - 1n });

const params = fc.record({
  chainId: u(256n),
  adjudicator: hex(20).map(toAddress),
  device: hex(20).map(toAddress),
  hub: hex(20).map(toAddress),
  token: hex(20).map(toAddress),
  challengeDuration: u(64n),
  salt: hex(32).map((h) => h as Bytes32),
}) as fc.Arbitrary<ChannelParams>;

const signed = fc.record({
  state: fc.record({
    channelId: hex(32).map((h) => h as ChannelId),
    version: u(64n),
    paidByDevice: u(256n),
    paidByHub: u(256n),
    round: u(64n),
    locksRoot: hex(32).map((h) => h as Bytes32),
    lockedByDevice: u(256n),
    lockedByHub: u(256n),
    isFinal: fc.boolean(),
  }),
  deviceSig: fc.option(
    hex(65).map((h) => h as SignatureHex),
    { nil: undefined },
  ),
  hubSig: fc.option(
    hex(65).map((h) => h as SignatureHex),
    { nil: undefined },
  ),
}) as fc.Arbitrary<SignedState>;

describe('parseSubmission', () => {
  it('round-trips records through bigint-safe JSON, in every accepted shape', () => {
    fc.assert(
      fc.property(params, signed, (p, s) => {
        const expected = { params: p, latest: s };
        const through = (v: unknown) => parseSubmission(parseJson(stringifyJson(v)));
        expect(through({ params: p, latest: s, signedVersion: 3n, funding: { device: 1n, hub: 2n } })).toEqual(
          expected,
        );
        expect(through({ record: { params: p, latest: s } })).toEqual(expected);
        expect(through({ params: p, signed: s })).toEqual(expected);
        expect(through({ params: p, ...s })).toEqual(expected);
      }),
      { numRuns: 50 },
    );
  });

  it('refuses other shapes and out-of-range values with MALFORMED', () => {
    const [p] = fc.sample(params, 1) as [ChannelParams];
    const [s] = fc.sample(signed, 1) as [SignedState];
    const bad: unknown[] = [
      null,
      [],
      'x',
      { params: p },
      { latest: s },
      { params: { ...p, chainId: '-1' }, latest: s },
      { params: { ...p, challengeDuration: (1n << 64n).toString() }, latest: s },
      { params: { ...p, device: 'nope' }, latest: s },
      { params: p, latest: { ...s, state: { ...s.state, version: 1.5 } } },
      { params: p, latest: { ...s, state: { ...s.state, isFinal: 'yes' } } },
      { params: p, latest: { ...s, deviceSig: '0x1234' } },
      { params: p, latest: { ...s, state: { ...s.state, channelId: '0x12' } } },
    ];
    for (const v of bad)
      expect(() => parseSubmission(parseJson(stringifyJson(v))), stringifyJson(v)).toThrow(MalformedError);
  });

  it('carries a device record’s locks and preimages; refuses malformed ones with MALFORMED', () => {
    const [p] = fc.sample(params, 1) as [ChannelParams];
    const [s] = fc.sample(signed, 1) as [SignedState];
    const h = `0x${'ab'.repeat(32)}` as Bytes32;
    const lock = { amount: 5n, hash: h, expiry: 1_900_000_000n, payer: 'hub' as const };
    const preimage = { hash: h, preimage: `0x${'cd'.repeat(32)}` as Bytes32 };
    const through = (v: unknown) => parseSubmission(parseJson(stringifyJson(v)));
    expect(through({ params: p, latest: s, locks: [lock], preimages: [preimage] })).toEqual({
      params: p,
      latest: s,
      locks: [lock],
      preimages: [preimage],
    });
    const bad: unknown[] = [
      { params: p, latest: s, locks: {} },
      { params: p, latest: s, locks: [{ ...lock, amount: 0n }] },
      { params: p, latest: s, locks: [{ ...lock, payer: 'someone' }] },
      { params: p, latest: s, locks: [{ ...lock, hash: '0x12' }] },
      { params: p, latest: s, locks: Array.from({ length: 65 }, () => lock) },
      { params: p, latest: s, preimages: [{ hash: h }] },
      { params: p, latest: s, preimages: [{ ...preimage, preimage: 7 }] },
    ];
    for (const v of bad)
      expect(() => parseSubmission(parseJson(stringifyJson(v))), stringifyJson(v)).toThrow(MalformedError);
  });
});
