import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { balanceOf } from '@trickle/chain/erc20';
import type { IncomingPayment } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

describe('hub and devices: stream, route, close — real chain, real hub, real stores', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it('streams 10,000 payments from several devices concurrently, and the counters match to the base unit', async () => {
    const devices = [2, 3, 4, 5];
    const clients = await Promise.all(devices.map((i) => w.client(i)));
    const channels = await Promise.all(clients.map((c) => c.openChannel({ token: w.token, deposit: 50_000_000n })));
    const perDevice = 2_500;
    const totals = await Promise.all(
      channels.map(async (ch, d) => {
        let sum = 0n;
        const pending: Promise<unknown>[] = [];
        for (let k = 0; k < perDevice; k++) {
          const amount = BigInt(1 + ((k * 7 + d) % 13));
          sum += amount;
          pending.push(ch.pay(amount));
          if (pending.length >= 500) await Promise.all(pending.splice(0));
        }
        await Promise.all(pending);
        return sum;
      }),
    );
    for (const [d, ch] of channels.entries()) {
      expect(ch.latest.state.paidByDevice).toBe(totals[d]);
      const hubRecord = w.hub!.channels.get(ch.channelId)!;
      expect(hubRecord.latest.state.paidByDevice).toBe(totals[d]);
      expect(hubRecord.latest.hubSig).toBe(ch.latest.hubSig);
      expect(ch.balance().settled).toBe(50_000_000n - totals[d]!);
    }
    const metrics = await w.hub!.metrics.registry.getSingleMetricAsString('trickle_updates_total');
    expect(metrics).toMatch(/outcome="accepted"/);
  });

  it('routes a payment from one device to another through the hub', async () => {
    const a = await w.client(6);
    const b = await w.client(7);
    const cha = await a.openChannel({ token: w.token, deposit: 10_000_000n });
    const chb = await b.openChannel({ token: w.token, deposit: 1_000_000n });
    // The hub must fund its side of B's channel to pay B.
    await w.hub!.channels.onChain(chb.channelId, {}); // no-op before deposit
    const { Adjudicator } = await import('@trickle/chain/adjudicator');
    const { approve } = await import('@trickle/chain/erc20');
    const hubWallet = w.chain.wallet(1);
    await approve(hubWallet, w.token, w.adjudicator, 5_000_000n);
    await new Adjudicator(w.adjudicator, hubWallet).deposit(chb.channelId, 5_000_000n);
    await waitFor(() => w.hub!.channels.get(chb.channelId)!.funding.hub === 5_000_000n);
    const received: IncomingPayment[] = [];
    chb.onPayment((p) => received.push(p));
    const receipt = await cha.pay(1_234_567n, { to: b.address });
    expect(receipt.paymentId).toBeDefined();
    expect(cha.latest.state.paidByDevice).toBe(1_234_567n);
    await waitFor(() => received.length === 1);
    expect(received[0]!.amount).toBe(1_234_567n);
    expect(received[0]!.paymentId).toBe(receipt.paymentId);
    expect(chb.latest.state.paidByHub).toBe(1_234_567n);
    // an unknown payee is refused up front and nothing moves
    const before = cha.latest.state;
    await expect(cha.pay(5n, { to: w.chain.addresses[11]! })).rejects.toMatchObject({ code: 'NO_ROUTE' });
    expect(cha.latest.state.paidByDevice).toBe(before.paidByDevice);
  });

  it('closes cooperatively: on-chain payouts equal the off-chain counters', async () => {
    const c = await w.client(8);
    const ch = await c.openChannel({ token: w.token, deposit: 3_000_000n });
    for (let k = 0; k < 50; k++) await ch.pay(10_001n);
    const device = w.chain.addresses[8]!;
    const hub = w.chain.addresses[1]!;
    const [d0, h0] = await Promise.all([
      balanceOf(w.chain.provider, w.token, device),
      balanceOf(w.chain.provider, w.token, hub),
    ]);
    const result = await c.close(ch.channelId);
    expect(result.mode).toBe('cooperative');
    const [d1, h1] = await Promise.all([
      balanceOf(w.chain.provider, w.token, device),
      balanceOf(w.chain.provider, w.token, hub),
    ]);
    expect(d1 - d0).toBe(3_000_000n - 500_050n);
    expect(h1 - h0).toBe(500_050n);
    await expect(ch.pay(1n)).rejects.toMatchObject({ code: 'CHANNEL_FINAL' });
  });
});
