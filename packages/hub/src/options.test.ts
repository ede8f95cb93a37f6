import { describe, expect, it } from 'vitest';
import { DEFAULT_HUB_LIMITS, resolveHubLimits } from './options.js';

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
    ]) {
      expect(() => resolveHubLimits(bad as never)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
  });
});
