import { describe, expect, it } from 'vitest';
import type { ChannelId } from '@trickle/protocol/types';
import { AckTracker } from './ack-tracker.js';

const A = `0x${'aa'.repeat(32)}` as ChannelId;
const B = `0x${'bb'.repeat(32)}` as ChannelId;

describe('AckTracker', () => {
  it('an ack answers its update and every earlier one on that channel (cumulative), not other channels', () => {
    const t = new AckTracker();
    t.received(A, 1, 100);
    t.received(A, 2, 110);
    t.received(A, 3, 120);
    t.received(B, 1, 105);
    expect(t.unanswered).toBe(4);
    expect(t.acked(A, 2, 150)).toBe(40); // update 2 arrived at 110
    expect(t.unanswered).toBe(2); // A:3 and B:1 left
    expect(t.acked(A, 1, 160)).toBeUndefined(); // already answered by the ack for 2
    expect(t.acked(B, 1, 125)).toBe(20);
    expect(t.unanswered).toBe(1);
  });

  it('a refusal answers only its update; a dropped connection forgets its channels', () => {
    const t = new AckTracker();
    t.received(A, 1, 0);
    t.received(A, 2, 0);
    t.refused(A, 1);
    expect(t.unanswered).toBe(1);
    t.refused(A, 7); // unknown: nothing happens
    expect(t.unanswered).toBe(1);
    t.received(B, 9, 0);
    t.forget([A, B]);
    expect(t.unanswered).toBe(0);
    expect(t.acked(A, 2, 1)).toBeUndefined();
  });

  it('a resend counts once, from its latest arrival; a channel keeps at most maxPerChannel entries', () => {
    const t = new AckTracker(3);
    t.received(A, 1, 0);
    t.received(A, 1, 50);
    expect(t.unanswered).toBe(1);
    expect(t.acked(A, 1, 60)).toBe(10);
    for (let id = 1; id <= 5; id++) t.received(A, id, id);
    expect(t.unanswered).toBe(3); // 1 and 2 dropped, oldest first
    expect(t.acked(A, 2, 10)).toBeUndefined();
    expect(t.acked(A, 5, 10)).toBe(5);
    expect(t.unanswered).toBe(0);
  });
});
