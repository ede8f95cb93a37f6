// DESIGN.md, "Who persists what, when": "Two different states with the same version are equivocation: refuse the
// second, keep both as evidence." A device shown a hub-signed state at the version of its latest that differs from it
// keeps the hub's offer in its durable record (the hub's own store keeps the device's the same way).
import { describe, expect, it } from 'vitest';
import { channelContext, zeroState } from '@trickle/protocol/channel';
import { stateDigest } from '@trickle/protocol/eip712';
import { nobleSigner, nobleVerifier } from '@trickle/protocol/signer';
import type { Message } from '@trickle/protocol/codec';
import { type Address, type Bytes32, type ChannelParams, type State } from '@trickle/protocol/types';
import { ClientChannel } from './channel.js';
import { memoryChannelStore, type DeviceChannelRecord } from './channel-store.js';
import type { Connection } from './connection.js';

const device = nobleSigner(`0x${'11'.repeat(32)}`);
const hub = nobleSigner(`0x${'22'.repeat(32)}`);
const params: ChannelParams = {
  chainId: 31337n,
  adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address,
  device: device.address,
  hub: hub.address,
  token: '0x0000000000000000000000000000000000000000' as Address,
  challengeDuration: 3600n,
  salt: `0x${'00'.repeat(32)}` as Bytes32,
};
const funding = { device: 1_000n, hub: 1_000n };

describe('a device shown two different hub-signed states at one version', () => {
  it('refuses the second and keeps both, durably, as evidence', async () => {
    const ctx = channelContext(params, funding);
    const zero: State = zeroState(ctx.channelId);
    const sent: Message[] = [];
    let nextId = 1;
    const connection = {
      ready: true,
      closed: false,
      id: () => nextId++,
      send: (m: Message) => {
        sent.push(m);
        return true;
      },
      request: async (m: Message) => {
        sent.push(m);
        return {
          t: 'sync',
          id: (m as { id: number }).id,
          channelId: ctx.channelId,
          latest: { state: zero },
        } as Message;
      },
    } as unknown as Connection;
    const store = memoryChannelStore();
    const record: DeviceChannelRecord = {
      params,
      channelId: ctx.channelId,
      funding,
      latest: { state: zero },
      signedVersion: 0n,
    };
    await store.save(record);
    const ch = new ClientChannel(record, {
      signer: device,
      verifier: nobleVerifier,
      store,
      connection,
      maxInFlight: 8,
      yieldMs: 50,
      routeTimeoutMs: 1_000,
    });
    await ch.resync();
    const signed = (s: State) => hub.signDigest(stateDigest(ctx.separator, s));
    const first: State = { ...zero, version: 1n, paidByHub: 10n };
    const second: State = { ...zero, version: 1n, paidByHub: 20n };
    ch.receive({ t: 'update', id: 100, channelId: ctx.channelId, state: first, sig: signed(first) } as never);
    await expect.poll(() => ch.record.latest.state.version).toBe(1n);
    ch.receive({ t: 'update', id: 101, channelId: ctx.channelId, state: second, sig: signed(second) } as never);
    await expect.poll(() => sent.some((m) => m.t === 'reject' && m.id === 101 && m.code === 'EQUIVOCATION')).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    // The first stays the channel's state; both are in the device's durable record.
    const stored = (await store.load(ctx.channelId))!;
    expect(stored.latest.state).toEqual(first);
    const evidence = (stored as { evidence?: { offered: { state: State } }[] }).evidence;
    expect(evidence?.map((e) => e.offered.state)).toEqual([second]);
  });
});
