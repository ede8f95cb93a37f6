import { describe, expect, it } from 'vitest';
import { createHubMetrics } from './metrics.js';

describe('hub metrics', () => {
  it('frames and accepted updates counted as plain numbers reach the exposition at every scrape', async () => {
    const m = createHubMetrics({ defaultMetrics: false });
    const text = () => m.registry.metrics();
    expect(await text()).not.toMatch(/trickle_frames_total\{/);
    m.tally.framesIn += 3;
    m.tally.framesOut += 1;
    m.tally.accepted += 2;
    m.updates.inc({ outcome: 'BAD_SIGNATURE' });
    let t = await text();
    expect(t).toMatch(/^trickle_frames_total\{direction="in"\} 3$/m);
    expect(t).toMatch(/^trickle_frames_total\{direction="out"\} 1$/m);
    expect(t).toMatch(/^trickle_updates_total\{outcome="accepted"\} 2$/m);
    expect(t).toMatch(/^trickle_updates_total\{outcome="BAD_SIGNATURE"\} 1$/m);
    // a scrape with nothing new changes nothing; the next adds only what came since
    expect(await text()).toBe(t);
    m.tally.framesIn += 4;
    m.tally.accepted += 1;
    t = await text();
    expect(t).toMatch(/^trickle_frames_total\{direction="in"\} 7$/m);
    expect(t).toMatch(/^trickle_updates_total\{outcome="accepted"\} 3$/m);
  });

  it('ack latencies tallied as plain numbers read as the histogram prom-client would have made of them', async () => {
    const m = createHubMetrics({ defaultMetrics: false });
    const reference = createHubMetrics({ defaultMetrics: false }); // the same values through prom-client's observe
    const values = [0.0003, 0.0005, 0.0007, 0.004, 0.004, 0.3, 1, 2.5, Number.NaN];
    for (const v of values) {
      m.tally.ackSeconds.observe(v);
      if (Number.isFinite(v)) reference.ackSeconds.observe(v);
    }
    const series = async (x: typeof m) =>
      (await x.registry.metrics()).split('\n').filter((l) => l.startsWith('trickle_ack_seconds'));
    expect(await series(m)).toEqual(await series(reference));
    expect(await series(m)).toContain('trickle_ack_seconds_bucket{le="0.0005"} 2');
    expect(await series(m)).toContain('trickle_ack_seconds_bucket{le="+Inf"} 8');
    expect(await series(m)).toContain('trickle_ack_seconds_count 8');
    // values observed on the histogram itself add to the tallied ones; a scrape changes nothing
    m.ackSeconds.observe(0.01);
    reference.ackSeconds.observe(0.01);
    expect(await series(m)).toEqual(await series(reference));
    expect(await series(m)).toEqual(await series(reference));
    m.registry.resetMetrics();
    expect(await series(m)).not.toContain('trickle_ack_seconds_count 9');
  });
});
