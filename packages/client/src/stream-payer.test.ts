import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ClientChannel } from './channel.js';
import { PaymentStream } from './stream.js';

/**
 * The payer's stream on a channel played by this test: every `pay()` is answered (acked) `latency` ms after it is
 * sent, as the hub's ack of a routed tick comes one round trip later (payer → hub → payee → hub → payer, with fsyncs).
 */
function channel(balance = 1_000_000_000n) {
  const sent: bigint[] = [];
  const ch = {
    latency: 150,
    sent,
    balance: () => ({ available: balance - sent.reduce((a, b) => a + b, 0n) }),
    pay(amount: bigint) {
      sent.push(amount);
      return new Promise((resolve) => setTimeout(() => resolve({}), ch.latency));
    },
  };
  return ch;
}
const asChannel = (ch: ReturnType<typeof channel>) => ch as unknown as ClientChannel;

/** Await what waits on the channel's answers: the fake clock moves on meanwhile. */
async function answered<T>(p: Promise<T>): Promise<T> {
  let done = false;
  void p.finally(() => (done = true)).catch(() => {});
  while (!done) await vi.advanceTimersByTimeAsync(10);
  return p;
}

describe('PaymentStream (payer side) with a slow hub', () => {
  afterEach(() => vi.useRealTimers());
  const fake = () =>
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance'] });

  it('a round trip longer than a tick (150 ms, ticks of 100 ms) still pays the rate: the time spent waiting is billed once answered', async () => {
    fake();
    const ch = channel();
    const rate = 1_000n; // a unit a ms
    const started = performance.now();
    const s = new PaymentStream(asChannel(ch), { ratePerSecond: rate, tickMs: 100 });
    await vi.advanceTimersByTimeAsync(3_000);
    expect(s.status).toBe('running');
    expect(s.lateTicks).toBeGreaterThan(0); // the scenario: ticks found the previous one unanswered
    await answered(s.settled());
    // Before, each tick that found one unanswered dropped its interval: about half the rate (1,500 of 3,000).
    expect(s.paid()).toBeGreaterThanOrEqual((rate * 3_000n * 9n) / 10n / 1000n);
    const total = await answered(s.stop());
    const elapsed = BigInt(performance.now() - started);
    expect(total).toBeGreaterThanOrEqual((rate * elapsed * 9n) / 10n / 1000n);
    expect(total).toBeLessThanOrEqual((rate * elapsed) / 1000n + 1n); // + the final tick's rounding unit
    expect(ch.sent.reduce((a, b) => a + b, 0n)).toBe(total);
  });

  it('the time spent waiting on a tick that stalls the stream is never billed, also not after resume()', async () => {
    fake();
    const ch = channel();
    ch.latency = 50;
    const rate = 1_000n;
    const s = new PaymentStream(asChannel(ch), { ratePerSecond: rate, tickMs: 100, stallMs: 500 });
    await vi.advanceTimersByTimeAsync(1_050);
    const before = s.paid(); // ten ticks, answered in time
    expect(before).toBe(1_000n);
    ch.latency = 5_000; // the tick sent at 1,100 ms is answered at 6,100 ms: the stream stalls at 1,600 ms
    await vi.advanceTimersByTimeAsync(1_000);
    expect(s.status).toBe('stalled');
    expect(s.error?.code).toBe('TIMEOUT');
    await vi.advanceTimersByTimeAsync(5_000);
    await answered(s.settled());
    expect(s.paid()).toBe(1_100n); // that tick's 100 ms, and nothing of the 500 ms that went unanswered
    ch.latency = 50;
    s.resume();
    await vi.advanceTimersByTimeAsync(1_000);
    const total = await answered(s.stop());
    expect(total).toBe(2_100n); // the 1,000 ms since resume()
    expect(ch.sent.reduce((a, b) => a + b, 0n)).toBe(total);
  });

  it('a device that did not run for an hour while waiting on a tick bills at most two ticks of that hour', async () => {
    fake();
    const ch = channel();
    let slept = 0;
    const rate = 1_000n;
    const s = new PaymentStream(
      asChannel(ch),
      { ratePerSecond: rate, tickMs: 100 },
      () => Math.floor(performance.now()) + slept,
    );
    await vi.advanceTimersByTimeAsync(1_050); // the tick sent at 1,000 ms is in flight
    slept += 3_600_000; // suspended: the next tick timer fires an hour late
    await vi.advanceTimersByTimeAsync(1_000);
    expect(s.status).toBe('running'); // the hour is not the hub's: no stall
    const total = await answered(s.stop());
    // 2,050 ms ran, plus at most two ticks (200 ms) for the hour, plus the final tick's rounding unit.
    expect(total).toBeGreaterThanOrEqual((rate * 2_050n * 9n) / 10n / 1000n);
    expect(total).toBeLessThanOrEqual((rate * (2_050n + 200n)) / 1000n + 1n);
  });
});
