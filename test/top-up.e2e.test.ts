/**
 * A device tops up an open channel instead of closing it and opening another (two transactions and a challenge
 * period): `client.topUp` deposits on-chain and records the new deposit; the hub takes it from its chain follower,
 * or — for a payment that needs it before the follower looked — by reading the channel's deposits again. And the hub
 * counts a deposit only as deep as its `confirmations` when a device announces a channel, as its follower does.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fileChannelStore } from '@trickle/client/store';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { adjudicatorHubChain } from '@trickle/hub/chain-watcher';
import { isTrickleError } from '@trickle/protocol/errors';
import type { ChannelId } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';

const rejection = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => e,
  );

describe('client.topUp', () => {
  let world: World | undefined;
  afterEach(async () => {
    await world?.close();
    world = undefined;
  });

  it('pays from the top-up at once, though the hub’s chain follower has not seen it; the close pays it out', async () => {
    const w = (world = await createWorld({ accounts: 3 }));
    // A follower that polls once a minute: only the hub's fresh read of the deposits can let the payment through.
    const hub = await w.startHub({ more: { chainPollMs: 60_000 } });
    const client = await w.client(2);
    const channel = await client.openChannel({ token: w.token, deposit: 1_000n });
    await channel.pay(900n);
    expect(isTrickleError(await rejection(channel.pay(500n)), 'INSUFFICIENT_FUNDS')).toBe(true);

    const balance = await client.topUp(channel.channelId, 2_000n);
    expect(balance).toMatchObject({ deposit: 3_000n, paid: 900n, available: 2_100n });
    const onChain = await new Adjudicator(w.adjudicator, w.chain.provider).getChannel(channel.channelId);
    expect(onChain.depositDevice).toBe(3_000n);
    // Durable on the device: a new client on the same store knows the deposit.
    expect((await fileChannelStore(join(w.dir, 'device-2')).load(channel.channelId))?.funding.device).toBe(3_000n);

    await channel.pay(500n);
    expect(hub.channels.get(channel.channelId as ChannelId)?.funding.device).toBe(3_000n);
    const closed = await client.close(channel.channelId);
    expect(closed.mode).toBe('cooperative');
    const after = await new Adjudicator(w.adjudicator, w.chain.provider).getChannel(channel.channelId);
    expect(after.status).toBe('closed');
    // And a hub polling its chain once a minute stops at once, not at its next poll.
    const stopping = Date.now();
    await hub.close();
    expect(Date.now() - stopping).toBeLessThan(10_000);
  });

  it('refuses what it cannot do before anything goes on-chain', async () => {
    const w = (world = await createWorld({ accounts: 3 }));
    await w.startHub();
    const client = await w.client(2);
    const channel = await client.openChannel({ token: w.token, deposit: 1_000n });
    const code = async (p: Promise<unknown>) => ((await rejection(p)) as { code?: string }).code;
    expect(await code(client.topUp(channel.channelId, 0n))).toBe('INVALID_ARGUMENT');
    expect(await code(client.topUp(channel.channelId, -5n))).toBe('INVALID_ARGUMENT');
    expect(await code(client.topUp(channel.channelId, 2n ** 96n))).toBe('INVALID_ARGUMENT');
    expect(await code(client.topUp(`0x${'ab'.repeat(32)}` as ChannelId, 5n))).toBe('WRONG_CHANNEL');
    const onChain = await new Adjudicator(w.adjudicator, w.chain.provider).getChannel(channel.channelId);
    expect(onChain.depositDevice).toBe(1_000n);
    await client.close(channel.channelId);
    expect(await code(client.topUp(channel.channelId, 5n))).toBe('CHANNEL_FINAL');
  });
});

describe('a hub with confirmations', () => {
  let world: World | undefined;
  afterEach(async () => {
    await world?.close();
    world = undefined;
  });

  it('takes a channel on only once its deposit is that deep', async () => {
    const w = (world = await createWorld({ accounts: 4 }));
    const chain = adjudicatorHubChain({
      provider: w.chain.provider,
      chainId: w.chain.chainId,
      adjudicator: w.adjudicator,
      runner: w.chain.wallet(1),
      confirmations: 3,
    });
    const hub = await w.startHub({ more: { chain } });
    const client = await w.client(2, { openTimeoutMs: 60_000 });
    let opened = false;
    const opening = client.openChannel({ token: w.token, deposit: 1_000n }).then((c) => {
      opened = true;
      return c;
    });
    // The deposit is mined, but no block has been built on it: the hub does not take the channel on yet.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(opened).toBe(false);
    expect(hub.channels.size).toBe(0);
    // Three blocks on top of it (another device's transactions): now it is as deep as the hub asks.
    const other = w.chain.wallet(3);
    for (let i = 0; i < 3; i++) await (await other.sendTransaction({ to: w.chain.addresses[3]!, value: 1n })).wait();
    const channel = await opening;
    expect(hub.channels.get(channel.channelId as ChannelId)?.funding.device).toBe(1_000n);
    await channel.pay(10n);
  });
});
