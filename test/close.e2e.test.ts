import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { balanceOf } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { createWorld, type World } from './helpers/harness.js';

/** `close()` falls back to a force close when the hub does not answer, and the channel settles on the latest state. */
describe('close falls back to force close', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it('hub gone: force close with the latest state both signed; settle after the challenge period pays it exactly', async () => {
    // Without its guard (which would settle it itself after the deadline): anybody's settle pays the device.
    const c = await w.client(2, {
      reconnect: { initialDelayMs: 50, maxDelayMs: 100, maxAttempts: 3 },
      lockGuard: false,
    });
    const ch = await c.openChannel({ token: w.token, deposit: 2_000_000n, challengeDuration: 60n });
    for (let k = 0; k < 20; k++) await ch.pay(1_111n);
    await w.hub!.close();
    const result = await c.close(ch.channelId, { timeoutMs: 500 });
    expect(result.mode).toBe('force');
    expect(result.state.state.paidByDevice).toBe(22_220n);
    await expect(ch.pay(1n)).rejects.toMatchObject({ code: 'CHANNEL_FINAL' });
    const adj = new Adjudicator(w.adjudicator, w.chain.wallet(9));
    const onChain = await adj.getChannel(ch.channelId);
    expect(onChain.status).toBe('closing');
    expect(onChain.version).toBe(ch.latest.state.version);
    await expect(adj.settle(ch.channelId)).rejects.toMatchObject({ code: 'CHAIN_REVERTED' });
    await w.chain.increaseTime(61);
    const before = await balanceOf(w.chain.provider, w.token, c.address);
    await adj.settle(ch.channelId);
    expect((await balanceOf(w.chain.provider, w.token, c.address)) - before).toBe(2_000_000n - 22_220n);
  });
});
