import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import type { ChannelId } from '@trickle/protocol/types';
import { TrickleError } from '@trickle/protocol/errors';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';
import { flakyDeviceStore, flakyHubStore } from './helpers/flaky-store.js';

describe('store failures reach their callers; the channel freezes and thaws', () => {
  let w: World;
  const failing = new Set<ChannelId>();
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub({ more: { store: flakyHubStore(openLmdbStore({ path: join(w.dir, 'flaky-hub') }), failing) } });
  });
  afterAll(async () => w?.close());

  it('a hub whose store fails mid-stream freezes that channel with STORE_FAILURE, serves the others, and resumes with every acked state intact', async () => {
    const a = await w.client(2);
    const b = await w.client(3);
    const cha = await a.openChannel({ token: w.token, deposit: 1_000_000n });
    const chb = await b.openChannel({ token: w.token, deposit: 1_000_000n });
    for (let k = 0; k < 50; k++) await Promise.all([cha.pay(100n), chb.pay(100n)]);
    const acked = cha.latest;
    expect(acked.state.paidByDevice).toBe(5_000n);

    failing.add(cha.channelId);
    const refused = await cha.pay(7n).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(TrickleError);
    expect((refused as TrickleError).code).toBe('STORE_FAILURE');
    expect(w.hub!.channels.isFrozen(cha.channelId)).toBe(true);
    // the other channel keeps being served while this one is frozen
    for (let k = 0; k < 20; k++) await chb.pay(10n);
    expect(chb.latest.state.paidByDevice).toBe(5_200n);
    // nothing of the refused payment took effect on either side
    expect(w.hub!.channels.get(cha.channelId)!.latest.state).toEqual(acked.state);
    expect(cha.latest.state.paidByDevice).toBe(5_000n);

    failing.delete(cha.channelId); // the disk has room again: a probe write thaws the channel
    await waitFor(() => !w.hub!.channels.isFrozen(cha.channelId), 10_000);
    await cha.pay(11n);
    expect(cha.latest.state.paidByDevice).toBe(5_011n);
    // every acked state is on the hub's disk: the hub's view is exactly the device's
    expect(w.hub!.channels.get(cha.channelId)!.latest.state).toEqual(cha.latest.state);
  });
});

describe('a device that reconnects while its hub channel is frozen', () => {
  let w: World;
  const failing = new Set<ChannelId>();
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub({ more: { store: flakyHubStore(openLmdbStore({ path: join(w.dir, 'flaky-hub') }), failing) } });
  });
  afterAll(async () => w?.close());

  it('gets STORE_FAILURE from pay() (its sync is refused), and resyncs and pays again once the hub thaws, without a restart', async () => {
    const a = await w.client(2, { reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
    const cha = await a.openChannel({ token: w.token, deposit: 1_000_000n });
    for (let k = 0; k < 10; k++) await cha.pay(100n);
    failing.add(cha.channelId);
    await expect(cha.pay(7n)).rejects.toMatchObject({ code: 'STORE_FAILURE' });
    expect(w.hub!.channels.isFrozen(cha.channelId)).toBe(true);

    // The device reconnects while the hub's store still refuses: its sync is refused, and pay() is answered.
    a.dropConnectionForTest();
    await waitFor(() => !a.connected, 5_000);
    await waitFor(() => a.connected, 5_000);
    const settle = (p: Promise<unknown>) =>
      Promise.race([
        p.then(
          () => 'resolved',
          (e: unknown) => (e instanceof TrickleError ? e.code : String(e)),
        ),
        new Promise((r) => setTimeout(() => r('unsettled'), 8_000)),
      ]);
    expect(await settle(cha.pay(5n))).toBe('STORE_FAILURE');
    expect(await settle(cha.pay(6n))).toBe('STORE_FAILURE');
    expect(w.hub!.channels.get(cha.channelId)!.latest.state.paidByDevice).toBe(1_000n);

    // The store recovers: the hub thaws, the device resyncs by itself and pays again.
    failing.delete(cha.channelId);
    await waitFor(() => !w.hub!.channels.isFrozen(cha.channelId), 10_000);
    expect(await settle(cha.pay(11n))).toBe('resolved');
    expect(cha.latest.state.paidByDevice).toBe(1_011n);
    expect(w.hub!.channels.get(cha.channelId)!.latest.state).toEqual(cha.latest.state);
  });
});

describe('close() while the hub’s channel is frozen', () => {
  let w: World;
  const failing = new Set<ChannelId>();
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub({ more: { store: flakyHubStore(openLmdbStore({ path: join(w.dir, 'flaky-hub') }), failing) } });
  });
  afterAll(async () => w?.close());

  it('closes cooperatively once the hub thaws within the timeout, and force-closes with the latest state both signed when it does not', async () => {
    const a = await w.client(2);
    const b = await w.client(3);
    const cha = await a.openChannel({ token: w.token, deposit: 1_000_000n });
    const chb = await b.openChannel({ token: w.token, deposit: 1_000_000n });
    await cha.pay(300n);
    await chb.pay(400n);

    // The hub's store fails for a's channel and recovers two seconds later: the close waits and ends cooperatively.
    failing.add(cha.channelId);
    await expect(cha.pay(1n)).rejects.toMatchObject({ code: 'STORE_FAILURE' });
    setTimeout(() => failing.delete(cha.channelId), 2_000);
    const coop = await a.close(cha.channelId, { timeoutMs: 15_000 });
    expect(coop.mode).toBe('cooperative');
    expect(coop.state.state).toMatchObject({ isFinal: true, paidByDevice: 300n });

    // The hub's store keeps failing for b's channel: the hub never countersigns, so b force-closes with its latest.
    failing.add(chb.channelId);
    await expect(chb.pay(1n)).rejects.toMatchObject({ code: 'STORE_FAILURE' });
    const forced = await b.close(chb.channelId, { timeoutMs: 1_500 });
    if (forced.mode !== 'force') throw new Error(`expected a force close, got ${forced.mode}`);
    expect(forced.reason).toContain('STORE_FAILURE');
    expect(forced.state.state).toMatchObject({ isFinal: false, paidByDevice: 400n });
    const onChain = await new Adjudicator(w.adjudicator, w.chain.wallet(9)).getChannel(chb.channelId);
    expect(onChain.status).toBe('closing'); // the challenge period runs with the device's latest state
    expect(onChain.version).toBe(forced.state.state.version);
  });
});

describe('a countersignature whose commit failed', () => {
  let w: World;
  /** Fail the hub's commits that adopt a state with the hub's counter at or above this, `failures` times. */
  const arm = { at: 0n, failures: 0, failed: 0 };
  beforeAll(async () => {
    w = await createWorld();
    const store = flakyHubStore(openLmdbStore({ path: join(w.dir, 'flaky-hub') }), (writes) => {
      const adopts = writes.some(
        (x) => x.kind === 'channel' && arm.at > 0n && x.record.latest.state.paidByHub >= arm.at,
      );
      if (!adopts || arm.failed >= arm.failures) return false;
      arm.failed++;
      return true;
    });
    await w.startHub({ more: { store } });
  });
  afterAll(async () => w?.close());

  it('the hub takes the device’s ack of its credit after the thaw: the credit resolves and the device pays on top of it, no WRONG_PAYER', async () => {
    const b = await w.client(3);
    const chb = await b.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(chb.channelId, 10_000n);
    await chb.pay(100n);
    // The device countersigns the credit; the hub's commit of that answer fails once (the channel freezes).
    Object.assign(arm, { at: 50n, failures: 1, failed: 0 });
    const credit = w.hub!.credit(chb.channelId, 50n);
    await waitFor(() => arm.failed === 1 && chb.latest.state.paidByHub === 50n, 10_000);
    await waitFor(() => !w.hub!.channels.isFrozen(chb.channelId), 10_000);
    // Thawed: the ack the frozen hub could not commit is taken now. The device's payments build on the state it
    // countersigned (before the fix: refused WRONG_PAYER), and the credit's caller is answered.
    for (let k = 1; k <= 3; k++) await chb.pay(BigInt(k));
    await expect(credit).resolves.toMatchObject({ state: { paidByHub: 50n } });
    expect(chb.latest.state).toMatchObject({ paidByDevice: 106n, paidByHub: 50n });
    expect(w.hub!.channels.get(chb.channelId)!.latest.state).toEqual(chb.latest.state);
  });
});

describe('a device whose store throws', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it('gets STORE_FAILURE from pay(), and no payment is paid twice or lost', async () => {
    const { store, failing } = flakyDeviceStore(join(w.dir, 'flaky-device'));
    const c = await w.client(4, { store });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(1_000n);
    failing.on = true;
    // A payment already on its way resolves (the hub committed it); the write behind it fails and freezes the channel.
    const first = await ch.pay(100n);
    expect(first.paidByDevice).toBe(1_100n);
    await waitFor(() => ch.frozen, 5_000);
    await expect(ch.pay(5n)).rejects.toMatchObject({ code: 'STORE_FAILURE' });
    // the hub was paid exactly what resolved: nothing twice, nothing lost
    expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(1_100n);
    failing.on = false;
    await waitFor(() => !ch.frozen, 10_000);
    await ch.pay(5n);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(1_105n);
    // a credit to the device needs its store first: with the store failing, the device refuses to countersign
    await w.hubDeposit(ch.channelId, 10_000n);
    failing.on = true;
    const credit = w.hub!.credit(ch.channelId, 50n).then(
      () => 'landed',
      (e: unknown) => (e as { code?: string }).code,
    );
    // Refused, but the device was shown the hub's signed credit: the hub answers it once a state both signed goes
    // above it. Here the device's next payment, once its store works again.
    await new Promise((r) => setTimeout(r, 300));
    failing.on = false;
    await waitFor(() => !ch.frozen, 10_000);
    await ch.pay(1n);
    expect(await credit).toBe('STORE_FAILURE');
    expect(ch.latest.state.paidByHub).toBe(0n);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByHub).toBe(0n);
  });
});

describe('two close() calls at once', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it('make one cooperative close, not a cooperative close and a force close', async () => {
    const c = await w.client(5);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await ch.pay(1_000n);
    const [a, b] = await Promise.all([c.close(ch.channelId), c.close(ch.channelId)]);
    expect(a.mode).toBe('cooperative');
    expect(b).toBe(a);
    expect(a.state.state.isFinal).toBe(true);
    expect(a.state.state.paidByDevice).toBe(1_000n);
  });
});
