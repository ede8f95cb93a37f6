import { describe, expect, it } from 'vitest';
import type { Message } from '@trickle/protocol/codec';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import type { TrickleClient } from './client.js';
import { onStream, type StreamEvent } from './stream.js';

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
function tick(from: Address, streamId: Bytes32, amount: bigint, total: bigint, final = false): Message {
  return {
    t: 'stream',
    id: 0,
    from,
    paymentId: id(1_000_000 + ++paymentIds),
    amount,
    stream: { streamId, ratePerSecond: 10n, total, final },
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
});
