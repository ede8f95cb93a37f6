import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { Bytes32 } from '@trickle/protocol/types';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/**
 * Red team of maxParticipantOrders (a964a25) on a real hub and chain: the bound counted a participant's orders only, but
 * an escrow paid without its order takes an entry of the open round's record as well (refunded at the clearing), so
 * one funded device paying escrows of one unit each under fresh order ids took every entry of a round and every other
 * device was refused LIMIT_EXCEEDED — the attack the bound was made against, through escrows instead of asks.
 */
describe('red team stop 4: escrows without orders count toward maxParticipantOrders', () => {
  let w: World;
  let attacker: { c: TrickleClient; ch: ClientChannel };
  let honest: { c: TrickleClient; ch: ClientChannel };
  const id = (n: number) => `0x${n.toString(16).padStart(64, '0')}` as Bytes32;

  beforeAll(async () => {
    w = await createWorld({ accounts: 6 });
    await w.startHub({
      storePath: join(w.dir, 'redteam-stop4-escrows'),
      market: { roundMs: 60_000, maxRoundOrders: 6, maxParticipantOrders: 2 },
    });
    const open = async (i: number) => {
      const c = await w.client(i);
      const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
      await w.hubDeposit(ch.channelId, 1_000_000n);
      await c.market.ready();
      return { c, ch };
    };
    attacker = await open(2);
    honest = await open(3);
  });
  afterAll(async () => w?.close());

  const state = (ch: ClientChannel) => w.hub!.channels.get(ch.channelId)!.latest.state;

  it('a device paying escrows under fresh ids is refused past its share; another device still places; all refunded once', async () => {
    const r = w.hub!.market!.round;
    const a0 = state(attacker.ch);
    // Two escrows (its share: two bids) are taken; the third, and every one after, is refused before anything moves.
    await attacker.ch.pay(1n, { escrowFor: id(1) });
    await attacker.ch.pay(1n, { escrowFor: id(2) });
    for (const n of [3, 4, 5, 6, 7])
      await expect(attacker.ch.pay(1n, { escrowFor: id(n) })).rejects.toMatchObject({
        code: 'LIMIT_EXCEEDED',
        message: expect.stringMatching(/participant/),
      });
    expect(state(attacker.ch).paidByDevice - a0.paidByDevice).toBe(2n);
    // The round still has room for everyone else: an escrow and its bid, and an ask.
    await expect(
      honest.c.market.submitOrder(honest.ch, { market: 'kwh', side: 'bid', quantity: 2n, price: 100n, round: r }),
    ).resolves.toBeDefined();
    await expect(
      honest.c.market.submitOrder(honest.ch, { market: 'kwh', side: 'ask', quantity: 9n, price: 500n, round: r }),
    ).resolves.toBeDefined();
    // The attacker's two escrows come back with the round, once.
    await w.hub!.market!.closeRound();
    await waitFor(() => state(attacker.ch).round >= r, 10_000);
    expect(state(attacker.ch).paidByHub - a0.paidByHub).toBe(2n);
  });
});
