import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { balanceOf } from '@trickle/chain/erc20';
import { fileChannelStore, type ChannelStore, type DeviceChannelRecord } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import { randomBytes32 } from '@trickle/protocol/random';
import { worldWithHub } from './helpers/hub-world.js';
import { waitFor } from './helpers/wait.js';

/**
 * Power lost in the middle of `openChannel`, against a real hub and chain: the device's store stops taking writes at a
 * chosen one (the power went while it was written: the previous record is what the disk holds), the client is dropped
 * and a new one connects on the same directory, as a rebooted device does.
 */
describe('red team: power lost while a device opens a channel', () => {
  const world = worldWithHub();

  /** The device's file store in `dir`, whose writes stop (never land, never answer) at the first that `dies` picks. */
  function dyingStore(dir: string, dies: (r: DeviceChannelRecord) => boolean) {
    const inner = fileChannelStore(dir);
    const state = { dead: false };
    const store: ChannelStore = {
      load: (id) => inner.load(id),
      list: () => inner.list(),
      close: () => inner.close!(),
      acquire: () => inner.acquire!(),
      save: (r) => {
        if (state.dead || dies(r)) {
          state.dead = true;
          return new Promise(() => {});
        }
        return inner.save(r);
      },
    };
    return { store, state };
  }

  it('after the deposit was mined and before it was recorded: the restarted device finds it on-chain, the hub is told, and it pays from it', async () => {
    const w = world();
    const dir = join(w.dir, 'device-2');
    const { store, state } = dyingStore(dir, (r) => r.funding.device > 0n);
    const c = await w.client(2, { store });
    const salt = randomBytes32();
    const opening = c.openChannel({ token: w.token, deposit: 1_000_000n, salt });
    await waitFor(() => state.dead, 30_000);
    await c.disconnect();
    void opening.catch(() => undefined);

    const c2 = await w.client(2);
    const [ch] = c2.channels();
    // before the fix: funding 0 in the record, every payment INSUFFICIENT_FUNDS, the hub never told of the channel
    expect(ch!.record.funding.device).toBe(1_000_000n);
    expect((await fileChannelStore(dir).load(ch!.channelId))!.funding.device).toBe(1_000_000n);
    expect((await ch!.pay(250n)).paidByDevice).toBe(250n);
    expect(w.hub!.channels.get(ch!.channelId)!.latest.state.paidByDevice).toBe(250n);
    // opened once: the same salt again is refused, nothing deposited twice
    const before = await balanceOf(w.chain.provider, w.token, w.chain.addresses[2]!);
    await expect(c2.openChannel({ token: w.token, deposit: 1_000_000n, salt })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
    expect(await balanceOf(w.chain.provider, w.token, w.chain.addresses[2]!)).toBe(before);
    // and it closes cooperatively with what it paid
    const closed = await c2.close(ch!.channelId);
    expect(closed.mode).toBe('cooperative');
    expect(closed.state.state.paidByDevice).toBe(250n);
  });

  it('before the deposit was sent: the restarted device reads nothing on-chain and leaves the record unfunded; opening it again deposits once', async () => {
    const w = world();
    const dir = join(w.dir, 'device-3');
    const chain = adjudicatorClientChain({
      wallet: w.chain.wallet(3),
      chainId: w.chain.chainId,
      adjudicator: w.adjudicator,
    });
    let sent = false;
    // the power goes as the open's transaction would leave: its first record (no deposit) is on disk
    const c = await w.client(3, {
      chain: {
        ...chain,
        openChannel: () => {
          sent = true;
          return new Promise(() => {});
        },
      },
    });
    const salt = randomBytes32();
    void c.openChannel({ token: w.token, deposit: 500_000n, salt }).catch(() => undefined);
    await waitFor(() => sent, 30_000);
    await c.disconnect();

    const before = await balanceOf(w.chain.provider, w.token, w.chain.addresses[3]!);
    const c2 = await w.client(3);
    const [unfunded] = c2.channels();
    expect(unfunded!.record.funding).toEqual({ device: 0n, hub: 0n });
    expect(w.hub!.channels.get(unfunded!.channelId)).toBeUndefined();
    const ch = await c2.openChannel({ token: w.token, deposit: 500_000n, salt });
    expect(ch.channelId).toBe(unfunded!.channelId);
    expect(ch.record.funding.device).toBe(500_000n);
    expect(await balanceOf(w.chain.provider, w.token, w.chain.addresses[3]!)).toBe(before - 500_000n);
    expect((await ch.pay(7n)).paidByDevice).toBe(7n);
    expect((await fileChannelStore(dir).load(ch.channelId))!.funding.device).toBe(500_000n);
  });
});
