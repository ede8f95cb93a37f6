import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { TrickleError } from '@trickle/protocol/errors';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/**
 * Red team of the market's netting (spec §7: "A credit the hub owes is never dropped: a refused or undelivered one is
 * retried with backoff"): a device that refuses its round credit once and then asks for a cooperative close must not
 * get a final state without it. The hub holds the close (PENDING_CREDITS) while a round credit to the channel is on
 * its way, retried; the credit lands, then the channel closes with it.
 */
describe('red team: a round credit the device refused is still owed when it closes', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 6 });
    await w.startHub({ storePath: join(w.dir, 'redteam-market-owed'), market: { roundMs: 60_000 } });
  });
  afterAll(async () => w?.close());

  it('a cooperative close asked between a refused round credit and its retry waits for the credit (PENDING_CREDITS)', async () => {
    let refusals = 0;
    const c = await w.client(2, {
      creditGuard: () => {
        // The device refuses the first round credit (as it would one it could not check yet), then accepts.
        if (refusals++ === 0) throw new TrickleError('BAD_CLEARING', 'not now');
      },
    });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await c.market.ready();
    const r = c.market.round;
    const before = ch.latest.state;
    await c.market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 3n, price: 1_000n, round: r }); // no seller
    expect(ch.latest.state.paidByDevice - before.paidByDevice).toBe(3_000n);
    await w.hub!.market!.closeRound();
    await waitFor(() => refusals >= 1, 10_000);
    // The hub's retry comes after a backoff (≥ 400 ms); the device asks to close meanwhile.
    const result = await c.close(ch.channelId, { timeoutMs: 20_000 });
    expect(result.mode).toBe('cooperative');
    expect(result.state.state.isFinal).toBe(true);
    // The unfilled bid's escrow came back before the final state: nothing stranded.
    expect(result.state.state.paidByHub - before.paidByHub).toBe(3_000n);
    expect(result.state.state.round).toBe(r);
  });
});
