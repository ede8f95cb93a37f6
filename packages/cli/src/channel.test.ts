import { describe, expect, it } from 'vitest';
import type { DeviceChannelRecord } from '@trickle/client/store';
import type { Address, ChannelId, State } from '@trickle/protocol/types';
import { unvoidedRefusal } from './channel.js';

const ID = `0x${'ab'.repeat(32)}` as ChannelId;
const latest: State = {
  channelId: ID,
  version: 3n,
  paidByDevice: 100n,
  paidByHub: 10n,
  lockedByDevice: 0n,
  lockedByHub: 0n,
  locksRoot: `0x${'00'.repeat(32)}`,
  isFinal: false,
} as unknown as State;
const record = (refused: State | undefined, signedVersion = 1027n): DeviceChannelRecord =>
  ({
    channelId: ID,
    params: { device: `0x${'11'.repeat(20)}` as Address },
    latest: { state: latest },
    signedVersion,
    refused,
  }) as unknown as DeviceChannelRecord;

describe('unvoidedRefusal (what trickle force-close warns of)', () => {
  it('a refused state above latest: its version and what it pays the hub more', () => {
    expect(unvoidedRefusal(record({ ...latest, version: 4n, paidByDevice: 600n }))).toEqual({
      version: 4n,
      exposure: 500n,
    });
    expect(unvoidedRefusal(record({ ...latest, version: 2n, paidByDevice: 600n }))).toBeUndefined(); // void
    expect(unvoidedRefusal(record(undefined))).toBeUndefined();
  });

  it('one the device cannot have signed (a corrupted record) is not reported: above its ceiling, or another channel', () => {
    expect(unvoidedRefusal(record({ ...latest, version: 1028n, paidByDevice: 600n }))).toBeUndefined();
    expect(unvoidedRefusal(record({ ...latest, version: 1027n + 2n ** 64n, paidByDevice: 600n }))).toBeUndefined();
    const other = `0x${'77'.repeat(32)}` as ChannelId;
    expect(unvoidedRefusal(record({ ...latest, channelId: other, version: 4n, paidByDevice: 600n }))).toBeUndefined();
  });
});
