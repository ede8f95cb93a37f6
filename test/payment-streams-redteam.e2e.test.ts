// Attacks on payment streams (pay by the second) with a real hub, chain and stores: races between stop, pause and
// resume, two streams on one channel, and what the payee sees when the payer ends a stream it had paused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bytes32 } from '@trickle/protocol/types';
import type { ClientChannel } from '@trickle/client/channel';
import { PaymentStream, onStream, openStream, type StreamEvent } from '@trickle/client';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('payment streams red team — real chain, real hub, real stores', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 16 });
    await w.startHub();
  });
  afterAll(async () => w?.close());

  async function pair(payerIndex: number, payeeIndex: number) {
    const payer = await w.client(payerIndex);
    const payee = await w.client(payeeIndex);
    const from = await payer.openChannel({ token: w.token, deposit: 10_000_000n });
    const to = await payee.openChannel({ token: w.token, deposit: 1_000n });
    await w.hubDeposit(to.channelId, 5_000_000n);
    const events: StreamEvent[] = [];
    onStream(payee, (e) => events.push(e));
    return { payer, payee, from, to, events };
  }
  const received = (to: ClientChannel) => to.latest.state.paidByHub;

  it('stream metadata the wire cannot carry is refused at pay() (INVALID_ARGUMENT), and the channel goes on paying', async () => {
    const { payee, from, to } = await pair(10, 11);
    const tick = { streamId: `0x${'5a'.repeat(32)}` as Bytes32, ratePerSecond: 1n, total: 7n, final: false };
    for (const stream of [
      { ...tick, ratePerSecond: 0n }, // a rate must be positive
      { ...tick, total: 1n << 256n }, // beyond uint256
      { ...tick, streamId: '0x1234' as Bytes32 }, // not 32 bytes
      { ...tick, total: 1n }, // below this payment (2): the hub's decoder refuses it
    ])
      await expect(from.pay(2n, { to: payee.address, stream })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(from.latest.state.paidByDevice).toBe(0n); // nothing signed, nothing paid
    await from.pay(7n, { to: payee.address, stream: tick }); // the same channel and connection, still paying
    await waitFor(() => received(to) === 7n, 10_000);
    expect(from.latest.state.paidByDevice).toBe(7n);
  });

  it('stopped after a pause, a stream still ends for the payee (an `end` event), paying at most one more unit', async () => {
    const { payee, from, to, events } = await pair(2, 3);
    const s = openStream(from, { to: payee.address, ratePerSecond: 10_000n, tickMs: 50, stallMs: 5_000 });
    await waitFor(() => s.paid() > 1_000n);
    await s.pause();
    const atPause = s.paid();
    await sleep(200);
    const total = await s.stop();
    expect(total - atPause).toBeLessThanOrEqual(1n);
    expect(from.latest.state.paidByDevice).toBe(total);
    await waitFor(() => events.at(-1)?.type === 'end', 10_000);
    expect(events.at(-1)!.total).toBe(total);
    expect(received(to)).toBe(total);
  });

  it('two streams on one channel to one payee: each ends, the payee tells them apart, the sums agree to the unit', async () => {
    const { payee, from, to, events } = await pair(4, 5);
    const a = openStream(from, { to: payee.address, ratePerSecond: 7_001n, tickMs: 50, stallMs: 5_000 });
    const b = openStream(from, { to: payee.address, ratePerSecond: 3_003n, tickMs: 70, stallMs: 5_000 });
    expect(a.id).not.toBe(b.id);
    await sleep(500);
    const [ta, tb] = await Promise.all([a.stop(), b.stop()]);
    expect(ta).toBeGreaterThan(0n);
    expect(tb).toBeGreaterThan(0n);
    expect(from.latest.state.paidByDevice).toBe(ta + tb);
    await waitFor(() => events.filter((e) => e.type === 'end').length === 2, 10_000);
    const endOf = (id: string) => events.find((e) => e.type === 'end' && e.streamId === id)!;
    expect(endOf(a.id).total).toBe(ta);
    expect(endOf(a.id).received).toBe(ta);
    expect(endOf(b.id).total).toBe(tb);
    expect(endOf(b.id).received).toBe(tb);
    expect(received(to)).toBe(ta + tb);
  });

  it('stop racing stop, pause and resume: one total, one end, nothing paid after it', async () => {
    const { payee, from, to, events } = await pair(6, 7);
    const s = openStream(from, { to: payee.address, ratePerSecond: 20_011n, tickMs: 20, stallMs: 5_000 });
    await waitFor(() => s.paid() > 1_000n);
    const paused = s.pause();
    const stops = [s.stop(), s.stop()];
    expect(() => s.resume()).toThrow(expect.objectContaining({ code: 'STREAM_STOPPED' }));
    await paused;
    const [t1, t2] = await Promise.all(stops);
    expect(t1).toBe(t2);
    expect(s.status).toBe('stopped');
    await sleep(200);
    expect(s.paid()).toBe(t1);
    expect(from.latest.state.paidByDevice).toBe(t1);
    await waitFor(() => received(to) === t1, 10_000);
    await waitFor(() => events.some((e) => e.type === 'end'), 10_000);
    expect(events.filter((e) => e.type === 'end')).toHaveLength(1);
    await expect(s.pause()).rejects.toMatchObject({ code: 'STREAM_STOPPED' });
  });

  it('the payer clock jumping an hour ahead or back bills at most two ticks of time for the jump, never a negative tick', async () => {
    const { payee, from, to } = await pair(8, 9);
    let skew = 0;
    const rate = 10_000n;
    const tickMs = 50;
    const started = Date.now();
    const s = new PaymentStream(
      from,
      { to: payee.address, ratePerSecond: rate, tickMs, stallMs: 5_000 },
      () => Date.now() + skew,
    );
    await waitFor(() => s.paid() > 500n);
    skew += 3_600_000; // NTP steps the clock an hour ahead
    await sleep(300);
    skew -= 7_200_000; // then two hours back
    await sleep(300);
    const total = await s.stop();
    const elapsed = BigInt(Date.now() - started);
    // Real time at the rate, plus two ticks for each of the two jumps, plus the final tick's rounding unit.
    expect(total).toBeLessThanOrEqual((rate * (elapsed + 4n * BigInt(tickMs))) / 1000n + 1n);
    expect(total).toBeGreaterThan(0n);
    expect(from.latest.state.paidByDevice).toBe(total);
    await waitFor(() => to.latest.state.paidByHub === total, 10_000);
  });

  it('another payment on the channel drains it mid-stream: the stream pays exactly the rest, ends for the payee, overdraws nothing', async () => {
    const { payee, from, to, events } = await pair(12, 13);
    const s = openStream(from, { to: payee.address, ratePerSecond: 10_000n, tickMs: 50, stallMs: 5_000 });
    await waitFor(() => s.paid() > 1_000n);
    // The payer spends all but 300 elsewhere (to the hub) while the stream runs: a tick bills 500.
    const rest = 300n;
    await from.pay(from.balance().available - rest);
    await waitFor(() => s.status === 'depleted', 10_000);
    const total = await s.stop();
    expect(from.balance().available).toBe(0n);
    expect(s.paid()).toBe(total);
    await waitFor(() => events.at(-1)?.type === 'end', 10_000);
    expect(events.at(-1)!.total).toBe(total);
    await waitFor(() => received(to) === total, 10_000);
    expect(from.latest.state.paidByDevice).toBe(10_000_000n); // the whole deposit: the stream and the drain, no more
  });

  it('drained to nothing mid-stream, the stream depletes at once and pays no more; the payee, sent no end (nothing is left to carry it), sees it go silent', async () => {
    const { payer, payee, from, to, events } = await pair(14, 15);
    const s = openStream(from, { to: payee.address, ratePerSecond: 10_000n, tickMs: 50, stallMs: 5_000 });
    await waitFor(() => s.paid() > 1_000n);
    await s.settled();
    await from.pay(from.balance().available);
    await waitFor(() => s.status === 'depleted', 10_000);
    const total = await s.stop();
    expect(from.balance().available).toBe(0n);
    expect(from.latest.state.paidByDevice).toBe(10_000_000n);
    await waitFor(() => received(to) === total, 10_000);
    expect(events.some((e) => e.type === 'end')).toBe(false);
    // Five tick intervals (here 50 ms each), at least DEFAULT_SILENCE_MS, after its last tick.
    await waitFor(() => events.at(-1)?.type === 'silent', 10_000);
    expect(events.at(-1)).toMatchObject({ from: payer.address, total, received: total, amount: 0n });
    expect(events.filter((e) => e.type === 'silent')).toHaveLength(1);
  });
});
