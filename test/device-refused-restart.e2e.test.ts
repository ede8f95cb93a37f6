import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileChannelStore } from '@trickle/client/store';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { Adjudicator } from '@trickle/chain/adjudicator';
import type { ChannelId } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';
import { flakyHubStore } from './helpers/flaky-store.js';

/**
 * A state the device signed and the hub refused (here: the hub's store fails the channel, STORE_FAILURE) pays the hub
 * more than the latest state both signed, and the hub holds it. The device's record keeps it from the refusal until a
 * state both signed goes above it, so a device that restarts still knows it is exposed: its close says so, and the
 * first sync with a hub that can countersign again voids it and drops it from the record.
 */
describe('the refused-state marker survives a restart', () => {
  let w: World;
  const failing = new Set<ChannelId>();
  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
    await w.startHub({ more: { store: flakyHubStore(openLmdbStore({ path: join(w.dir, 'failing-hub') }), failing) } });
  });
  afterAll(async () => w?.close());

  /** Device `index` opens a channel, pays 100 (v1), then 50 more that the hub refuses: v2 (paying 150) is unvoided. */
  async function refusedPayment(index: number) {
    const device = await w.client(index);
    const ch = await device.openChannel({ token: w.token, deposit: 1_000n });
    expect((await ch.pay(100n)).version).toBe(1n);
    failing.add(ch.channelId);
    const err = await ch.pay(50n).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'STORE_FAILURE' });
    await waitFor(() => ch.unvoided === 2n);
    // On disk with the refusal (not written behind): the state, which the hub may register.
    const stored = await fileChannelStore(join(w.dir, `device-${index}`)).load(ch.channelId);
    expect(stored!.latest.state).toMatchObject({ version: 1n, paidByDevice: 100n });
    expect(stored!.refused).toMatchObject({ version: 2n, paidByDevice: 150n, paidByHub: 0n });
    await device.disconnect();
    return ch.channelId;
  }

  it('restarted where the hub countersigns again: the first sync voids it and the record drops it', async () => {
    const id = await refusedPayment(2);
    failing.delete(id);
    const device = await w.client(2);
    const ch = device.channel(id)!;
    expect(await ch.voidRefused(10_000)).toBe(true);
    expect(ch.unvoided).toBeUndefined();
    await ch.flushWrites();
    const stored = await fileChannelStore(join(w.dir, 'device-2')).load(id);
    expect(stored!.refused).toBeUndefined();
    expect(stored!.latest.state.version).toBeGreaterThan(2n);
    expect(stored!.latest.state).toMatchObject({ paidByDevice: 100n, paidByHub: 0n });
    expect(w.hub!.channels.get(id)!.latest.state).toEqual(stored!.latest.state);
    expect(ch.balance()).toMatchObject({ paid: 100n, available: 900n });
  });

  it('restarted while the hub cannot void it, then closed with the hub unreachable: unvoided and the reason name it', async () => {
    const id = await refusedPayment(3);
    const device = await w.client(3); // the hub is up, but its store still fails this channel
    const ch = device.channel(id)!;
    expect(ch.unvoided).toBe(2n);
    await w.hub!.close(); // and now it is gone
    await waitFor(() => !device.connected);
    const closed = await device.close(id, { timeoutMs: 1_000 });
    expect(closed).toMatchObject({ mode: 'force' });
    expect(closed.mode === 'force' && closed.reason).toMatch(/refused state 2 not void: the hub may register it/);
    expect(closed.state.state).toMatchObject({ version: 1n, paidByDevice: 100n });
    const onChain = await new Adjudicator(w.adjudicator, w.chain.wallet(3)).getChannel(id);
    expect([onChain.status, onChain.version]).toEqual(['closing', 1n]);
    // The record keeps the marker through the force close (the hub can still answer it with that state).
    const stored = await fileChannelStore(join(w.dir, 'device-3')).load(id);
    expect(stored).toMatchObject({ closing: 'force', refused: { version: 2n, paidByDevice: 150n } });
  });
});
