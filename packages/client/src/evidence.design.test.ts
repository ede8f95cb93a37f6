// DESIGN.md, "Who persists what, when": "Two different states with the same version are equivocation: refuse the
// second, keep both as evidence." A device shown a hub-signed state at the version of its latest that differs from it
// keeps the hub's offer in its durable record (the hub's own store keeps the device's the same way).
import { describe, expect, it } from 'vitest';
import { zeroState } from '@trickle/protocol/channel';
import { stateDigest } from '@trickle/protocol/eip712';
import { nobleSigner } from '@trickle/protocol/signer';
import type { State } from '@trickle/protocol/types';
import { standaloneChannel } from './channel.fixture.js';

const device = nobleSigner(`0x${'11'.repeat(32)}`);
const hub = nobleSigner(`0x${'22'.repeat(32)}`);

describe('a device shown two different hub-signed states at one version', () => {
  it('refuses the second and keeps both, durably, as evidence', async () => {
    const { ch, ctx, sent, store } = await standaloneChannel({
      device,
      hub: hub.address,
      funding: { device: 1_000n, hub: 1_000n },
    });
    const zero: State = zeroState(ctx.channelId);
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
