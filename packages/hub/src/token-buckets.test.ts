import { describe, expect, it } from 'vitest';
import { TokenBuckets } from './token-buckets.js';

describe('TokenBuckets', () => {
  it('gives `burst` at once and `perSecond` more each second, per key', () => {
    const b = new TokenBuckets<string>(2, 3); // one token per 500 ms
    for (let i = 0; i < 3; i++) expect(b.take('a', 0)).toBe(0);
    expect(b.take('a', 0)).toBe(500);
    expect(b.take('b', 0)).toBe(0); // another key has its own
    expect(b.waitMs('a', 250)).toBe(250);
    expect(b.take('a', 500)).toBe(0);
  });

  it('takes a refunded token back, never above the burst', () => {
    const b = new TokenBuckets<string>(1, 2);
    b.spend('a', 0);
    b.spend('a', 0);
    expect(b.waitMs('a', 0)).toBe(1000);
    b.refund('a', 0);
    expect(b.waitMs('a', 0)).toBe(0);
    b.refund('a', 0);
    b.refund('a', 0); // full: no third token
    expect(b.take('a', 0)).toBe(0);
    expect(b.take('a', 0)).toBe(0);
    expect(b.take('a', 0)).toBe(1000);
    b.refund('unknown', 0); // never spent: nothing to give back
    expect(b.size).toBe(1);
  });
});
