import { describe, expect, it } from 'vitest';
import {
  channelContext,
  checkFullySigned,
  signState,
  validateParams,
  zeroState,
  SameDeviceAndHubError,
  type ChannelContext,
} from './channel.js';
import { channelIdOf, domainSeparator, trickleDomain } from './eip712.js';
import { toAddress } from './hex.js';
import { nobleSigner, nobleVerifier } from './signer.js';
import type { Bytes32, ChannelParams, State } from './types.js';

const one = nobleSigner(`0x${'44'.repeat(32)}`);
const other = nobleSigner(`0x${'55'.repeat(32)}`);
const base: ChannelParams = {
  chainId: 31337n,
  adjudicator: toAddress('0x5FbDB2315678afecb367f032d93F642f64180aa3'),
  device: one.address,
  hub: other.address,
  token: toAddress(`0x${'00'.repeat(20)}`),
  challengeDuration: 3600n,
  salt: `0x${'07'.repeat(32)}` as Bytes32,
};
const same: ChannelParams = { ...base, hub: one.address };

describe('a channel needs two parties, as the adjudicator requires on open', () => {
  it('channelContext refuses device = hub with a typed error, whatever the address case', () => {
    for (const hub of [one.address, one.address.toLowerCase() as typeof one.address]) {
      const call = () => channelContext({ ...base, hub }, { device: 10n, hub: 0n });
      expect(call).toThrow(SameDeviceAndHubError);
      expect(call).toThrow(
        expect.objectContaining({
          code: 'INVALID_ARGUMENT',
          details: { field: 'hub', device: one.address, hub: one.address },
        }),
      );
    }
    expect(channelContext(base, { device: 10n, hub: 0n }).params.hub).toBe(other.address);
  });

  it('validateParams refuses it the same way', () => {
    expect(() => validateParams(same)).toThrow(SameDeviceAndHubError);
    expect(() => validateParams(base)).not.toThrow();
  });

  it('checkFullySigned refuses a state "signed by both" with one key, even through a hand-built context', () => {
    const channelId = channelIdOf(same);
    const separator = domainSeparator(trickleDomain(same.chainId, same.adjudicator));
    const forged: ChannelContext = { params: same, channelId, separator, funding: { device: 10n, hub: 0n } };
    const state: State = { ...zeroState(channelId), version: 1n, paidByHub: 5n };
    const signed = signState(one, separator, state, 'hub', signState(one, separator, state, 'device'));
    expect(() => checkFullySigned(forged, signed, nobleVerifier)).toThrow(SameDeviceAndHubError);
    // The same two signatures by two different keys pass: the refusal is about the parties, not the signatures.
    const ctx = channelContext(base, { device: 10n, hub: 0n });
    const good: State = { ...zeroState(ctx.channelId), version: 1n, paidByHub: 5n };
    expect(() =>
      checkFullySigned(
        ctx,
        signState(other, ctx.separator, good, 'hub', signState(one, ctx.separator, good, 'device')),
        nobleVerifier,
      ),
    ).not.toThrow();
  });
});
