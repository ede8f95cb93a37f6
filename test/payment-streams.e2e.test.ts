import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { onStream, openStream, type StreamEvent } from '@trickle/client';
import { createWorld, type World } from './helpers/harness.js';
import { holdEventLoop, waitFor } from './helpers/wait.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A payer and a payee (funded by the hub) on one hub; every amount is checked against the channels' states. */
describe('payment streams through the hub — real chain, real hub, real stores', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 14 });
    await w.startHub();
  });
  afterAll(async () => w?.close());

  async function pair(payerIndex: number, payeeIndex: number, payerOptions: Parameters<World['client']>[1] = {}) {
    const deposit = 10_000_000n;
    const payer = await w.client(payerIndex, payerOptions);
    const payee = await w.client(payeeIndex);
    const from = await payer.openChannel({ token: w.token, deposit });
    const to = await payee.openChannel({ token: w.token, deposit: 1_000n });
    await w.hubDeposit(to.channelId, 5_000_000n);
    const events: StreamEvent[] = [];
    onStream(payee, (e) => events.push(e));
    return { payer, payee, from, to, events };
  }

  /** What a payer's channel paid net of refunds (it receives nothing else in these tests). */
  const net = (ch: ClientChannel) => ch.latest.state.paidByDevice - ch.latest.state.paidByHub;

  /** What the hub's record says the payee's channel received. */
  const hubPaid = (ch: ClientChannel) => w.hub!.channels.get(ch.channelId)!.latest.state.paidByHub;

  it('paused, adjusted, resumed and stopped: paid to the base unit, never for paused time, the payee sees open, rate and end', async () => {
    const { payee, from, to, events } = await pair(2, 3);
    const paidBefore = from.latest.state.paidByDevice;
    const receivedBefore = to.latest.state.paidByHub;
    const started = Date.now();
    // Rates that leave a partial unit to round up on stop: the last tick, flagged final, always pays something.
    // stallMs well above a routed round trip on a loaded machine: this test is not about stalls.
    const s = from.stream({ to: payee.address, ratePerSecond: 10_007n, tickMs: 50, stallMs: 5_000 });
    expect(s.status).toBe('running');
    expect(s.depletesAt).toBeGreaterThan(Date.now() + 900_000); // ~10,000,000 / 10,000 per second = 1,000 s
    await sleep(400);
    await s.pause();
    const run1 = Date.now() - started;
    const atPause = s.paid();
    expect(atPause).toBeGreaterThan(0n);
    expect(atPause).toBeLessThanOrEqual((10_007n * BigInt(run1)) / 1000n);
    expect(s.depletesAt).toBeUndefined();
    await sleep(300); // paused: nothing accrues
    expect(s.paid()).toBe(atPause);
    expect(from.latest.state.paidByDevice - paidBefore).toBe(atPause);
    s.adjust(40_013n);
    const resumed = Date.now();
    s.resume();
    await sleep(400);
    const total = await s.stop();
    const run2 = Date.now() - resumed;
    expect(s.status).toBe('stopped');
    expect(total - atPause).toBeGreaterThan(0n);
    expect(total - atPause).toBeLessThanOrEqual((40_013n * BigInt(run2)) / 1000n + 1n); // + the rounded-up unit
    // To the base unit: the stream, the payer's channel, the payee's channel (its own record and the hub's).
    expect(from.latest.state.paidByDevice - paidBefore).toBe(total);
    await waitFor(() => events.at(-1)?.type === 'end', 20_000);
    expect(to.latest.state.paidByHub - receivedBefore).toBe(total);
    expect(events.at(-1)!.total).toBe(total);
    expect(events.at(-1)!.received).toBe(total);
    expect(events[0]!.type).toBe('open');
    expect(events[0]!.ratePerSecond).toBe(10_007n);
    const rateChange = events.find((e) => e.type === 'rate')!;
    expect(rateChange.ratePerSecond).toBe(40_013n);
    expect(new Set(events.map((e) => e.streamId))).toEqual(new Set([s.id]));
    expect(() => s.adjust(1n)).toThrow(expect.objectContaining({ code: 'STREAM_STOPPED' }));
    expect(() => s.resume()).toThrow(expect.objectContaining({ code: 'STREAM_STOPPED' }));
  });

  it('runs to depletion at maxTotal exactly, and the payee sees the end', async () => {
    const { payee, from, to, events } = await pair(4, 5);
    const paidBefore = from.latest.state.paidByDevice;
    const receivedBefore = to.latest.state.paidByHub;
    const s = openStream(from, {
      to: payee.address,
      ratePerSecond: 50_000n,
      maxTotal: 12_345n,
      tickMs: 20,
      stallMs: 5_000,
    });
    const statuses: string[] = [];
    s.onChange((c) => statuses.push(c.status));
    await waitFor(() => s.status === 'depleted', 30_000);
    await s.settled();
    expect(statuses).toEqual(['depleted']);
    expect(s.paid()).toBe(12_345n);
    expect(await s.stop()).toBe(12_345n);
    expect(from.latest.state.paidByDevice - paidBefore).toBe(12_345n);
    await waitFor(() => events.at(-1)?.type === 'end');
    expect(to.latest.state.paidByHub - receivedBefore).toBe(12_345n);
    expect(events.at(-1)!.total).toBe(12_345n);
  });

  it('cut by the payee disconnecting: the stream stalls at once, nothing accrues after, and every unit paid lands once the payee is back', async () => {
    const { payee, from, to } = await pair(6, 7, { routeTimeoutMs: 2_000 });
    const netBefore = net(from);
    const hubPaidBefore = hubPaid(to);
    const s = openStream(from, { to: payee.address, ratePerSecond: 20_000n, tickMs: 50 });
    await waitFor(() => s.paid() > 2_000n);
    await payee.disconnect();
    await waitFor(() => s.status === 'stalled', 5_000);
    // The next tick is refused (NO_ROUTE), or the one in flight goes unanswered past stallMs (TIMEOUT).
    expect(['NO_ROUTE', 'TIMEOUT']).toContain(s.error?.code);
    await s.settled();
    const paid = s.paid();
    await sleep(300); // stalled: no accrual, no payment (a refund of the tick in flight could only lower it)
    expect(s.paid()).toBeLessThanOrEqual(paid);
    // A tick in flight at the cut left the payer's channel: the hub holds it for the payee (delivered when it is back)
    // or refunds it to the payer. Either way, to the base unit: the stream, the payer's channel net of refunds, and
    // the payee's channel on the hub agree.
    await w.client(7);
    await waitFor(() => net(from) - netBefore === s.paid() && hubPaid(to) - hubPaidBefore === s.paid(), 40_000);
    expect(net(from) - netBefore).toBe(s.paid());
    expect(hubPaid(to) - hubPaidBefore).toBe(s.paid());
    expect(await s.stop()).toBe(s.paid());
  }, 60_000);

  it('cut by the payer disconnecting: ticks stop accruing within one tick, the stream stalls; after the reconnect it resumes on request', async () => {
    // The payer stays offline for 1.5 s before it reconnects: longer than the stream's stallMs.
    // A receipt the hub sent while the payer was offline is not sent again: that tick's pay() times out (routeTimeoutMs,
    // 2 s here) and the stream counts it as paid unless the hub refunds it.
    const { payer, payee, from, to } = await pair(8, 9, {
      reconnect: { initialDelayMs: 1_500, maxDelayMs: 1_500 },
      routeTimeoutMs: 2_000,
    });
    const netBefore = net(from);
    const started = performance.now();
    const s = openStream(from, { to: payee.address, ratePerSecond: 20_000n, tickMs: 50, stallMs: 200 });
    // A hub answering slower than stallMs (a loaded machine's fsync) stalls the stream before the cut: not the stall
    // under test, so it is resumed.
    await waitFor(() => {
      if (s.status === 'stalled') s.resume();
      return s.paid() > 2_000n;
    });
    const cutAt = performance.now();
    payer.dropConnectionForTest();
    await waitFor(() => s.status === 'stalled', 5_000);
    expect(s.error?.code).toBe('TIMEOUT');
    expect(payer.connected).toBe(false);
    await waitFor(() => payer.connected, 10_000);
    await s.settled(); // the tick in flight at the cut is resent and lands
    const stalledAt = s.paid();
    // Of the 1.5 s offline nothing was billed: the tick in flight at the cut paid for time before it (the time its
    // predecessor's round trip took too), and at most one tick was sent after, for at most two ticks' time (100 ms),
    // before the next tick saw it unanswered; what the payer waited on since was dropped by the stall.
    expect(stalledAt).toBeLessThanOrEqual((20_000n * BigInt(Math.ceil(cutAt - started) + 100)) / 1000n);
    await sleep(200);
    expect(s.paid()).toBe(stalledAt);
    s.resume();
    await sleep(300);
    const total = await s.stop();
    expect(total).toBeGreaterThan(stalledAt);
    await waitFor(() => net(from) - netBefore === total).catch((e: unknown) => {
      throw new Error(`the payer's net moved ${net(from) - netBefore}, the stream paid ${total}: ${e}`);
    });
    await waitFor(() => to.latest.state.paidByHub >= total);
    // The payee countersigns a credit before the hub commits it (its ack in flight): wait for the hub's record too.
    await waitFor(() => hubPaid(to) >= total);
    expect(hubPaid(to)).toBe(to.latest.state.paidByHub);
  });

  it('a device whose event loop is blocked past stallMs with a tick in flight does not stall: the answer read after counts', async () => {
    const { payee, from } = await pair(12, 13);
    // The device's loop (and this in-process hub's) is held 600 ms just after each of three ticks is sent. Timers run
    // before I/O: the next tick fires before the hub's answer is read, 600 ms after its tick, past stallMs.
    const pay = from.pay.bind(from);
    let blocked = 0;
    Object.assign(from, {
      pay: (...args: Parameters<typeof pay>) => {
        const p = pay(...args);
        if (blocked < 3 && s.paid() > 0n) {
          blocked++;
          holdEventLoop(600);
        }
        return p;
      },
    });
    const s = openStream(from, { to: payee.address, ratePerSecond: 20_000n, tickMs: 50, stallMs: 300 });
    await waitFor(() => blocked === 3 || s.status !== 'running', 20_000);
    const paid = s.paid();
    await waitFor(() => s.paid() > paid || s.status !== 'running', 20_000);
    expect(s.error).toBeUndefined();
    expect(s.status).toBe('running');
    expect(s.lateTicks).toBeGreaterThanOrEqual(3); // each blocked tick found the previous one unanswered
    await s.stop();
    // What the stream counts as paid is what left the payer's channel, to the base unit.
    expect(s.paid()).toBe(from.latest.state.paidByDevice - from.latest.state.paidByHub);
  });

  it('refuses a rate of zero or below, a rate that depletes within one tick, maxTotal above the balance (stable codes)', async () => {
    const payer: TrickleClient = await w.client(10);
    const ch = await payer.openChannel({ token: w.token, deposit: 100_000n });
    expect(() => openStream(ch, { ratePerSecond: 0n })).toThrow(expect.objectContaining({ code: 'INVALID_RATE' }));
    expect(() => openStream(ch, { ratePerSecond: -5n })).toThrow(expect.objectContaining({ code: 'INVALID_RATE' }));
    expect(() => openStream(ch, { ratePerSecond: 1_000_000n, tickMs: 100 })).toThrow(
      expect.objectContaining({ code: 'STREAM_DEPLETES' }),
    );
    expect(() => openStream(ch, { ratePerSecond: 1_000n, maxTotal: 50n, tickMs: 100 })).toThrow(
      expect.objectContaining({ code: 'STREAM_DEPLETES' }),
    );
    expect(() => openStream(ch, { ratePerSecond: 1n, maxTotal: 100_001n })).toThrow(
      expect.objectContaining({ code: 'INSUFFICIENT_FUNDS' }),
    );
    const s = openStream(ch, { ratePerSecond: 1_000n, tickMs: 100 }); // pays the hub: no payee
    expect(() => s.adjust(0n)).toThrow(expect.objectContaining({ code: 'INVALID_RATE' }));
    expect(() => s.adjust(10_000_000n)).toThrow(expect.objectContaining({ code: 'STREAM_DEPLETES' }));
    await sleep(250);
    const total = await s.stop();
    expect(total).toBeGreaterThan(0n);
    expect(ch.latest.state.paidByDevice).toBe(total);
    expect(() => s.adjust(10n)).toThrow(expect.objectContaining({ code: 'STREAM_STOPPED' }));
    await expect(s.pause()).rejects.toMatchObject({ code: 'STREAM_STOPPED' });
  });
});
