import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { fileChannelStore, type ChannelStore } from '@trickle/client';
import { createWorld, type World } from './helpers/harness.js';

/**
 * One fsync on the payer's path: pay() resolves on the hub's countersigned ack and the device writes its own
 * payments' states behind. A device that dies between the ack and its write loses nothing and, after a restart,
 * signs nothing until it has resynced — so it never signs two different states at one version.
 */
describe('device write-behind', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it('a device killed between the ack and its write restarts, resyncs and goes on paying: no equivocation, no lost credit', async () => {
    const dir = join(w.dir, 'behind');
    const inner = fileChannelStore(dir);
    let hang = false;
    const hung: (() => void)[] = [];
    const store: ChannelStore = {
      load: (id) => inner.load(id),
      list: () => inner.list(),
      // the process "dies" before the write lands (its writes fail at the end, for the harness's disconnect)
      save: (r) =>
        hang ? new Promise<void>((_, reject) => hung.push(() => reject(new Error('dead')))) : inner.save(r),
    };
    const c1 = await w.client(5, { store });
    const ch1 = await c1.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ch1.channelId, 100_000n);
    await ch1.pay(1_000n);
    // the write behind that payment lands (grouped: one write a second at most)
    for (let t = 0; (await inner.load(ch1.channelId))?.latest.state.paidByDevice !== 1_000n; t++) {
      if (t > 100) throw new Error('the write behind the payment did not land');
      await new Promise((r) => setTimeout(r, 50));
    }
    hang = true;
    for (let k = 0; k < 10; k++) await ch1.pay(100n); // resolved by the hub's acks; the device's writes never land
    const hubAfter = w.hub!.channels.get(ch1.channelId)!.latest.state;
    expect(hubAfter.paidByDevice).toBe(2_000n);
    const onDisk = (await inner.load(ch1.channelId))!;
    expect(onDisk.latest.state.paidByDevice).toBeLessThan(2_000n); // the device's disk is behind
    c1.dropConnectionForTest();

    // restart from the stale record: the device adopts the hub's newest state carrying its own signature
    const c2 = await w.client(5, { store: fileChannelStore(dir) });
    const ch2 = c2.channel(ch1.channelId)!;
    for (let k = 0; k < 5; k++) await ch2.pay(10n);
    const hub = w.hub!.channels.get(ch1.channelId)!;
    expect(hub.latest.state.paidByDevice).toBe(2_050n);
    expect(ch2.latest.state).toEqual(hub.latest.state);
    expect(hub.latest.state.version).toBeGreaterThan(hubAfter.version);
    // a credit lands once, durable on the device before it countersigns
    await w.hub!.credit(ch1.channelId, 77n);
    expect(ch2.latest.state.paidByHub).toBe(77n);
    expect((await inner.load(ch1.channelId))!.latest.state.paidByHub).toBe(77n);
    expect(w.hub!.metrics).toBeDefined();
    const metrics = await w.hub!.metrics.registry.metrics();
    expect(metrics).not.toMatch(/outcome="EQUIVOCATION"/);
    hang = false;
    for (const fail of hung.splice(0)) fail();
  });

  it('the states of a second share one write behind', async () => {
    const inner = fileChannelStore(join(w.dir, 'grouped'));
    let saves = 0;
    const store: ChannelStore = {
      load: (id) => inner.load(id),
      list: () => inner.list(),
      save: (r) => (saves++, inner.save(r)),
    };
    const c = await w.client(7, { store });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(1n); // the first proposal reserves versions ahead (a write before it leaves), then it is written behind
    await new Promise((r) => setTimeout(r, 1_500));
    const before = saves;
    for (let k = 0; k < 10; k++) {
      await ch.pay(1n); // ten states over ~0.7 s, each its own
      await new Promise((r) => setTimeout(r, 60));
    }
    await new Promise((r) => setTimeout(r, 1_500));
    expect(ch.latest.state.paidByDevice).toBe(11n);
    expect(saves - before).toBeLessThanOrEqual(3); // one write a second at most (every 50 ms before: ~10)
    expect((await inner.load(ch.channelId))!.latest).toEqual(ch.latest);
  });

  it('a client that disconnects writes what waits to be written behind first: its store holds its newest state', async () => {
    const dir = join(w.dir, 'flushed');
    const c = await w.client(6, { store: fileChannelStore(dir) });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    for (let k = 0; k < 5; k++) await ch.pay(10n); // each resolved on the hub's ack; written behind, not yet
    const latest = ch.latest;
    await c.disconnect();
    const onDisk = (await fileChannelStore(dir).load(ch.channelId))!;
    expect(onDisk.latest).toEqual(latest);
    expect(onDisk.latest.state.paidByDevice).toBe(50n);
  });
});
