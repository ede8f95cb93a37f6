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
});
