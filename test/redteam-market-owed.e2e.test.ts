import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { TrickleError } from '@trickle/protocol/errors';
import type { State } from '@trickle/protocol/types';
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

  it("a channel's round credits land oldest first: a later round's landing never hides an earlier one refused, across a restart", async () => {
    // Before, a single hub sent each round's credit as soon as the round closed: round r2's landed while r1's was
    // waiting for its retry, the channel's round said r2, and a hub restarted then took r1's as landed (the channel's
    // round is what says a round credit landed): r1's escrow stayed at the hub for ever.
    const storePath = join(w.dir, 'redteam-market-order');
    await w.startHub({ storePath, market: { roundMs: 60_000 } });
    let refuse = true;
    let r1 = 0n;
    const guard = ({ previous, state, amount }: { previous: State; state: State; amount: bigint }) => {
      // Refuse round r1's credit, and any plain one (r1's sent again once the channel passed r1), until told.
      if (refuse && amount > 0n && (state.round === r1 || state.round === previous.round))
        throw new TrickleError('BAD_CLEARING', 'not now');
    };
    const c = await w.client(3, { creditGuard: guard });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await c.market.ready();
    const before = ch.latest.state;
    r1 = c.market.round;
    await c.market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 1n, price: 700n, round: r1 }); // no seller
    await w.hub!.market!.closeRound();
    const r2 = r1 + 1n;
    await waitFor(() => c.market.round === r2);
    await c.market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 1n, price: 50n, round: r2 });
    await w.hub!.market!.closeRound();
    // Round r2's credit would land now, ahead of r1's (refused, retried in 400 ms, 800 ms…); the hub stops meanwhile.
    await new Promise((res) => setTimeout(res, 300));
    expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByHub).toBe(before.paidByHub); // nothing landed
    await w.hub!.close();
    await c.disconnect();

    refuse = false;
    const hub = await w.startHub({ storePath, market: { roundMs: 60_000 } });
    await w.client(3, { creditGuard: guard }); // back, accepting
    const paid = () => hub.channels.get(ch.channelId)!.latest.state.paidByHub - before.paidByHub;
    await waitFor(() => paid() === 750n, 10_000);
    expect(hub.channels.get(ch.channelId)!.latest.state.round).toBe(r2);
    await new Promise((res) => setTimeout(res, 500)); // a credit paid twice would have landed by now
    expect(paid()).toBe(750n);
  });

  it('a participant offline for several rounds gets every round credit it is owed when it reconnects, each once', async () => {
    await w.startHub({ storePath: join(w.dir, 'redteam-market-offline'), market: { roundMs: 60_000 } });
    const c = await w.client(5);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await c.market.ready();
    const before = ch.latest.state;
    const r = c.market.round;
    // Bids nobody sells to, for the open round and the next: each escrow comes back in its round's credit.
    await c.market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 2n, price: 300n, round: r });
    await c.market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 1n, price: 77n, round: r + 1n });
    await c.disconnect();
    for (let k = 0; k < 4; k++) await w.hub!.market!.closeRound(); // rounds r … r + 3 close while it is away
    const state = () => w.hub!.channels.get(ch.channelId)!.latest.state;
    expect(state().paidByHub).toBe(before.paidByHub);
    const back = await w.client(5);
    await waitFor(() => state().round >= r + 1n, 10_000);
    await w.hub!.market!.closeRound();
    await new Promise((res) => setTimeout(res, 500)); // a credit paid twice would have landed by now
    expect(state().paidByHub - before.paidByHub).toBe(677n);
    expect(state().paidByDevice - before.paidByDevice).toBe(677n);
    expect(back.channel(ch.channelId)!.latest.state).toEqual(state());
  });

  it('a round credit whose channel closed on-chain without it is paid on the participant’s next channel, once', async () => {
    // Before, the credit failed CHANNEL_NOT_OPEN and was given up: the unfilled bid's escrow stayed at the hub.
    await w.startHub({ storePath: join(w.dir, 'redteam-market-closed'), market: { roundMs: 60_000 } });
    let refuse = true;
    const c = await w.client(4, {
      creditGuard: ({ amount }) => {
        if (refuse && amount > 0n) throw new TrickleError('BAD_CLEARING', 'not now');
      },
    });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 60n });
    await c.market.ready();
    const r = c.market.round;
    await c.market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 3n, price: 1_000n, round: r }); // no seller
    await w.hub!.market!.closeRound();
    // The device refuses its credit; the hub goes a version up over it (nothing moves), which the device countersigns.
    await waitFor(
      () => (w.hub!.channels.get(ch.channelId)!.unsettled ?? []).length === 0 && ch.latest.state.version > 1n,
      10_000,
    );
    const last = ch.latest;
    expect(last.state.paidByHub).toBe(0n);
    // It force-closes at the latest state both signed, without the credit; nothing above it to challenge with.
    const adj = new Adjudicator(w.adjudicator, w.chain.wallet(4));
    await adj.forceClose(last);
    await w.chain.increaseTime(61);
    await adj.settle(ch.channelId);
    await waitFor(() => w.hub!.channels.get(ch.channelId)!.status === 'closed', 10_000);
    // Its retry finds the channel closed (CHANNEL_NOT_OPEN): no longer owed on that channel.
    await waitFor(() => !w.hub!.market!.owes(ch.channelId), 20_000);

    // A new channel in the market's token: the next round pays the stranded credit on it, as round r's credit.
    refuse = false;
    const ch2 = await c.openChannel({ token: w.token, deposit: 1_000n });
    await w.hubDeposit(ch2.channelId, 10_000n);
    await w.hub!.market!.closeRound();
    const state2 = () => w.hub!.channels.get(ch2.channelId)!.latest.state;
    await waitFor(() => state2().paidByHub === 3_000n, 10_000);
    expect(state2().round).toBe(r);
    await w.hub!.market!.closeRound();
    await new Promise((res) => setTimeout(res, 500)); // a credit paid twice would have landed by now
    expect(state2().paidByHub).toBe(3_000n);
    // Nor after a restart, which finds round r's credit owed on the closed channel again.
    await w.hub!.close();
    await c.disconnect();
    const hub = await w.startHub({ storePath: join(w.dir, 'redteam-market-closed'), market: { roundMs: 60_000 } });
    await w.client(4);
    await waitFor(() => hub.channels.get(ch2.channelId) !== undefined, 10_000);
    await hub.market!.closeRound();
    await new Promise((res) => setTimeout(res, 1_000)); // a credit paid twice would have landed by now
    expect(hub.channels.get(ch2.channelId)!.latest.state.paidByHub).toBe(3_000n);
  });
});
