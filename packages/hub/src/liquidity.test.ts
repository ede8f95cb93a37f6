import { describe, expect, it } from 'vitest';
import { isTrickleError } from '@trickle/protocol/errors';
import type { ChannelRecord } from './store/types.js';
import { hubSpendable, resolveLiquidity } from './liquidity.js';

const record = (o: {
  hub: bigint;
  byDevice: bigint;
  byHub: bigint;
  outgoingByHub?: bigint;
  lockedByHub?: bigint;
  outgoingLockedByHub?: bigint;
}): ChannelRecord =>
  ({
    funding: { device: 1_000n, hub: o.hub },
    status: 'open',
    latest: {
      state: { paidByDevice: o.byDevice, paidByHub: o.byHub, lockedByHub: o.lockedByHub ?? 0n, isFinal: false },
    },
    outgoing:
      o.outgoingByHub === undefined
        ? undefined
        : { state: { paidByHub: o.outgoingByHub, lockedByHub: o.outgoingLockedByHub ?? o.lockedByHub ?? 0n } },
  }) as unknown as ChannelRecord;

describe('liquidity', () => {
  it('hubSpendable: deposit + what the device paid − what the hub paid or has offered', () => {
    expect(hubSpendable(record({ hub: 500n, byDevice: 0n, byHub: 0n }))).toBe(500n);
    expect(hubSpendable(record({ hub: 500n, byDevice: 70n, byHub: 100n }))).toBe(470n);
    expect(hubSpendable(record({ hub: 500n, byDevice: 0n, byHub: 100n, outgoingByHub: 350n }))).toBe(150n);
    expect(hubSpendable(record({ hub: 0n, byDevice: 0n, byHub: 0n }))).toBe(0n);
    // Money the hub has locked toward the device (conditional payments) is not spendable, nor a lock it offers.
    expect(hubSpendable(record({ hub: 500n, byDevice: 0n, byHub: 100n, lockedByHub: 60n }))).toBe(340n);
    expect(
      hubSpendable(record({ hub: 500n, byDevice: 0n, byHub: 100n, outgoingByHub: 100n, outgoingLockedByHub: 90n })),
    ).toBe(310n);
  });

  it('resolveLiquidity: low-water defaults to half, bad values are INVALID_ARGUMENT', () => {
    expect(resolveLiquidity({ autoDeposit: 1_000n, budget: 5_000n })).toEqual({
      autoDeposit: 1_000n,
      budget: 5_000n,
      lowWater: 500n,
    });
    expect(resolveLiquidity({ autoDeposit: 1_000n, budget: 0n, lowWater: 1_000n }).lowWater).toBe(1_000n);
    for (const bad of [
      { autoDeposit: 0n, budget: 1n },
      { autoDeposit: -1n, budget: 1n },
      { autoDeposit: 10n, budget: -5n },
      { autoDeposit: 10n, budget: 5n, lowWater: 11n },
      { autoDeposit: 10 as unknown as bigint, budget: 5n },
    ]) {
      let err: unknown;
      try {
        resolveLiquidity(bad);
      } catch (e) {
        err = e;
      }
      expect(isTrickleError(err, 'INVALID_ARGUMENT')).toBe(true);
    }
  });
});
