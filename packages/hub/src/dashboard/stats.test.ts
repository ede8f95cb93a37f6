import { describe, expect, it } from 'vitest';
import { DashboardStats, percentile } from './stats.js';

describe('dashboard stats', () => {
  it('percentile: nearest rank on a sorted array, null when empty', () => {
    expect(percentile([], 50)).toBeNull();
    expect(percentile([7], 99)).toBe(7);
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile(xs, 99)).toBe(99);
    expect(percentile(xs, 100)).toBe(100);
  });

  it('tick closes one second: counts, latency percentiles, then starts empty; the series is bounded', () => {
    const s = new DashboardStats(2);
    s.accepted(3);
    s.accepted(2);
    for (const ms of [5, 1, 3]) s.ack(ms);
    s.commit(0.002, 10);
    const p = s.tick(5_000);
    expect(p).toEqual({ t: 5, updates: 5, ackP50: 3, ackP99: 5, commitP50: 2, commitP99: 2, commits: 1, writes: 10 });
    expect(s.tick(6_000)).toMatchObject({ updates: 0, ackP50: null, commitP99: null, commits: 0 });
    s.tick(7_000);
    expect(s.series().map((x) => x.t)).toEqual([6, 7]);
    expect(s.totalUpdates).toBe(5);
    expect(s.totalCommits).toBe(1);
  });
});
