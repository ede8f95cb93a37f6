import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Message } from '@trickle/protocol/codec';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import type { TrickleClient } from './client.js';
import { DEFAULT_SILENCE_MS, onStream, type StreamEvent } from './stream.js';

/**
 * The payee's view of payment streams, fed the hub's `stream` frames as its connection would deliver them (a hub
 * played by this test: the frames are what route-extras sends after each delivered tick).
 */
const honest = `0x${'aa'.repeat(20)}` as Address;
const hostile = `0x${'bb'.repeat(20)}` as Address;
const id = (n: number): Bytes32 => `0x${n.toString(16).padStart(64, '0')}` as Bytes32;

function payee(): { client: TrickleClient; deliver: (m: Message) => void } {
  const listeners = new Set<(m: Message) => void>();
  const client = {
    onMessage(l: (m: Message) => void) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
  } as unknown as TrickleClient;
  return { client, deliver: (m) => listeners.forEach((l) => l(m)) };
}

let paymentIds = 0;
function tick(
  from: Address,
  streamId: Bytes32,
  amount: bigint,
  total: bigint,
  final = false,
  ratePerSecond = 10n,
): Message {
  return {
    t: 'stream',
    id: 0,
    from,
    paymentId: id(1_000_000 + ++paymentIds),
    amount,
    stream: { streamId, ratePerSecond, total, final },
  } as Message;
}

describe('onStream (payee side)', () => {
  it("a payer opening 10,000 streams of one unit each crowds out only its own, never another payer's running stream", () => {
    const { client, deliver } = payee();
    const events: StreamEvent[] = [];
    onStream(client, (e) => events.push(e));
    deliver(tick(honest, id(1), 10n, 10n));
    for (let i = 0; i < 10_000; i++) deliver(tick(hostile, id(10 + i), 1n, 1n));
    deliver(tick(honest, id(1), 10n, 20n));
    const last = events.at(-1)!;
    expect(last.from).toBe(honest);
    // Without fair eviction the honest stream was dropped: its next tick read as a new stream, `received` reset.
    expect(last.type).toBe('tick');
    expect(last.received).toBe(20n);
    // The hostile payer's newest stream is still followed; its oldest was the one dropped.
    deliver(tick(hostile, id(10 + 9_999), 1n, 2n));
    expect(events.at(-1)).toMatchObject({ type: 'tick', received: 2n });
    deliver(tick(hostile, id(10), 1n, 2n));
    expect(events.at(-1)).toMatchObject({ type: 'open', received: 1n });
  });

  it('an ended stream is forgotten; a stream id is per payer (another payer reusing it does not add to it)', () => {
    const { client, deliver } = payee();
    const events: StreamEvent[] = [];
    onStream(client, (e) => events.push(e));
    deliver(tick(honest, id(1), 5n, 5n));
    deliver(tick(hostile, id(1), 7n, 7n));
    expect(events.at(-1)).toMatchObject({ type: 'open', received: 7n });
    deliver(tick(honest, id(1), 5n, 10n, true));
    expect(events.at(-1)).toMatchObject({ type: 'end', received: 10n });
    deliver(tick(honest, id(1), 5n, 5n));
    expect(events.at(-1)).toMatchObject({ type: 'open', received: 5n });
  });

  describe('a stream that stops without an end (payer offline, stalled, or drained: nothing left to carry a last tick)', () => {
    afterEach(() => vi.useRealTimers());
    const fake = () => vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });

    it('is reported silent once after five tick intervals (at least 1 s) without a tick, resumes on the next, and an end ends it', () => {
      fake();
      const { client, deliver } = payee();
      const events: StreamEvent[] = [];
      onStream(client, (e) => events.push(e));
      // 1 unit at 10 a second: each tick pays for 100 ms, so five of them is 500 ms, below the 1 s floor.
      deliver(tick(honest, id(1), 1n, 1n));
      vi.advanceTimersByTime(300);
      deliver(tick(honest, id(1), 1n, 2n));
      vi.advanceTimersByTime(DEFAULT_SILENCE_MS - 1);
      expect(events.map((e) => e.type)).toEqual(['open', 'tick']);
      vi.advanceTimersByTime(2);
      expect(events.at(-1)).toMatchObject({ type: 'silent', amount: 0n, total: 2n, received: 2n, from: honest });
      expect(events.at(-1)!.paymentId).toBe(events[1]!.paymentId);
      vi.advanceTimersByTime(60_000);
      expect(events.filter((e) => e.type === 'silent')).toHaveLength(1);
      // Back: `resume` (amount 0, as of before), then the tick's own event as ever (a rate change still reads `rate`).
      deliver(tick(honest, id(1), 3n, 5n, false, 20n));
      expect(events.slice(-2)).toMatchObject([
        { type: 'resume', amount: 0n, total: 2n, received: 2n, ratePerSecond: 10n },
        { type: 'rate', amount: 3n, total: 5n, received: 5n, ratePerSecond: 20n },
      ]);
      deliver(tick(honest, id(1), 1n, 6n, true));
      expect(events.at(-1)).toMatchObject({ type: 'end', received: 6n });
      vi.advanceTimersByTime(60_000);
      expect(events.at(-1)!.type).toBe('end');
    });

    it("each stream has its own silence time: a slow stream's long one does not delay a fast stream's report", () => {
      fake();
      const { client, deliver } = payee();
      const events: StreamEvent[] = [];
      onStream(client, (e) => events.push(e));
      // 100 units at 1 a second: that tick paid for 100 s, so 500 s of silence; then a stream paying 100 ms a tick.
      deliver(tick(hostile, id(2), 100n, 100n, false, 1n));
      deliver(tick(honest, id(1), 1n, 1n));
      vi.advanceTimersByTime(DEFAULT_SILENCE_MS + 1);
      expect(events.filter((e) => e.type === 'silent').map((e) => e.from)).toEqual([honest]);
      vi.advanceTimersByTime(500_000 - DEFAULT_SILENCE_MS - 2);
      expect(events.filter((e) => e.type === 'silent')).toHaveLength(1);
      vi.advanceTimersByTime(2);
      expect(events.filter((e) => e.type === 'silent').map((e) => e.from)).toEqual([honest, hostile]);
    });

    it('a tick that claimed a low rate lengthens the silence only while the stream stays at that rate', () => {
      fake();
      const { client, deliver } = payee();
      const events: StreamEvent[] = [];
      onStream(client, (e) => events.push(e));
      // 2 units "at 1 a second" (10 s of silence), then ticks of 100 ms at the payee's price, then nothing.
      deliver(tick(hostile, id(3), 2n, 2n, false, 1n));
      let total = 2n;
      for (let i = 0; i < 5; i++) {
        vi.advanceTimersByTime(100);
        deliver(tick(hostile, id(3), 100_000n, (total += 100_000n), false, 1_000_000n));
      }
      // Five intervals of 100 ms are below the floor: silent after 1 s, not after the 10 s the first tick paid for.
      vi.advanceTimersByTime(DEFAULT_SILENCE_MS + 200);
      expect(events.filter((e) => e.type === 'silent')).toHaveLength(1);
    });

    it('a tick that paid for an hour lends its silence time to no later tick: an hour, then a unit every 4 h, goes silent', () => {
      fake();
      const { client, deliver } = payee();
      const events: StreamEvent[] = [];
      onStream(client, (e) => events.push(e));
      const hour = 3_600_000;
      const silent = () => events.filter((e) => e.type === 'silent').length;
      let now = 0;
      const until = (t: number) => {
        vi.advanceTimersByTime(t - now);
        now = t;
      };
      // An hour at 10 a second, at the stream's real rate: five hours of silence, as for a stream ticking hourly.
      deliver(tick(hostile, id(4), 36_000n, 36_000n));
      let total = 36_000n;
      until(4 * hour);
      // 1 unit (100 ms at that rate) does not stretch what the hour paid for, nor count as an hour itself.
      deliver(tick(hostile, id(4), 1n, ++total));
      until(5 * hour - 1);
      expect(silent()).toBe(0);
      until(5 * hour + 100);
      expect(silent()).toBe(1);
      for (let h = 8; h <= 24; h += 4) {
        until(h * hour);
        deliver(tick(hostile, id(4), 1n, ++total));
        expect(events.at(-2)!.type).toBe('resume');
        until(h * hour + DEFAULT_SILENCE_MS + 100);
        expect(silent()).toBe(h / 4);
      }
      // Before, the hour's five-hour silence time stayed with the stream at that rate: 24 h, six ticks, no `silent`.
      expect(events.filter((e) => e.type === 'tick')).toHaveLength(6);
    });

    it('a listener that throws on a silent stream stops neither the sweep nor the reports of the others', () => {
      fake();
      // The client throws a listener's error again on a later turn (the process's uncaught exception): held here.
      const later: (() => void)[] = [];
      const spy = vi.spyOn(globalThis, 'queueMicrotask').mockImplementation((f) => void later.push(f));
      const { client, deliver } = payee();
      const seen: StreamEvent[] = [];
      let bugs = 1;
      onStream(
        client,
        (e) => {
          seen.push(e);
          if (e.type === 'silent' && bugs-- > 0) throw new Error('listener bug');
        },
        { silenceMs: 500 },
      );
      deliver(tick(honest, id(1), 1n, 1n));
      deliver(tick(hostile, id(2), 1n, 1n));
      vi.advanceTimersByTime(501);
      expect(seen.filter((e) => e.type === 'silent').map((e) => e.from)).toEqual([honest, hostile]);
      spy.mockRestore();
      expect(later).toHaveLength(1);
      expect(later[0]).toThrow('listener bug');
      deliver(tick(honest, id(1), 1n, 2n));
      expect(seen.slice(-2).map((e) => e.type)).toEqual(['resume', 'tick']);
      vi.advanceTimersByTime(501);
      expect(seen.filter((e) => e.type === 'silent')).toHaveLength(3);
    });

    it('streams falling silent a millisecond apart are swept at most every 100 ms, each reported once', () => {
      fake();
      const { client, deliver } = payee();
      const events: StreamEvent[] = [];
      onStream(client, (e) => events.push(e), { silenceMs: 1_000 });
      for (let i = 0; i < 1_000; i++) {
        deliver(tick(hostile, id(100 + i), 1n, 1n));
        vi.advanceTimersByTime(1);
      }
      // The first falls silent at 1,000 ms (now), the last at 1,999 ms.
      let sweeps = 0;
      for (let t = 0; t < 1_200; t++) {
        const before = events.length;
        vi.advanceTimersByTime(1);
        if (events.length > before) sweeps++;
      }
      const silent = events.filter((e) => e.type === 'silent');
      expect(new Set(silent.map((e) => e.streamId)).size).toBe(1_000);
      expect(silent).toHaveLength(1_000);
      expect(sweeps).toBeLessThanOrEqual(11);
    });

    it('silenceMs sets the time for every stream; a value that is not a positive ms count is refused; unsubscribed, nothing more is reported', () => {
      fake();
      const { client, deliver } = payee();
      for (const silenceMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31])
        expect(() => onStream(client, () => {}, { silenceMs })).toThrow(
          expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
        );
      const events: StreamEvent[] = [];
      const off = onStream(client, (e) => events.push(e), { silenceMs: 250 });
      deliver(tick(honest, id(1), 100n, 100n, false, 1n));
      vi.advanceTimersByTime(251);
      expect(events.at(-1)!.type).toBe('silent');
      deliver(tick(honest, id(1), 1n, 101n, false, 1n));
      expect(events.slice(-2).map((e) => e.type)).toEqual(['resume', 'tick']);
      off();
      vi.advanceTimersByTime(10_000);
      expect(events.at(-1)!.type).toBe('tick');
      expect(vi.getTimerCount()).toBe(0);
    });
  });
});
