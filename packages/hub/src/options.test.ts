import { describe, expect, it } from 'vitest';
import { DEFAULT_HUB_LIMITS, MAX_TIMER_MS, resolveHubLimits, timerMs } from './options.js';

describe('hub limits', () => {
  it('defaults are written out and merged', () => {
    expect(resolveHubLimits()).toEqual(DEFAULT_HUB_LIMITS);
    expect(resolveHubLimits({ maxFrameBytes: 1024 }).maxFrameBytes).toBe(1024);
  });
  it('refuses non-positive or non-finite limits with INVALID_ARGUMENT', () => {
    for (const bad of [
      { maxFrameBytes: 0 },
      { messagesPerSecond: -1 },
      { idleTimeoutMs: Number.NaN },
      { maxRoutedInFlight: -1n },
      { httpRequestsPerSecond: 0 },
      { httpRequestBurst: Number.POSITIVE_INFINITY },
      { httpRequestBurst: 0.5 }, // no whole token ever: every HTTP request, /health too, would be refused
    ]) {
      expect(() => resolveHubLimits(bad as never)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
  });
  it('refuses a time in ms longer than a Node timer can wait (Node fires it after 1 ms instead)', () => {
    for (const k of ['handshakeTimeoutMs', 'idleTimeoutMs', 'closeGraceMs', 'floodCloseMs'] as const) {
      expect(resolveHubLimits({ [k]: MAX_TIMER_MS })[k]).toBe(MAX_TIMER_MS);
      expect(() => resolveHubLimits({ [k]: MAX_TIMER_MS + 1 })).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT', details: { [k]: String(MAX_TIMER_MS + 1) } }),
      );
    }
    expect(timerMs('chainPollMs', 1000)).toBe(1000);
    for (const bad of [0, -1, 1.5, Number.NaN, MAX_TIMER_MS + 1])
      expect(() => timerMs('chainPollMs', bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
