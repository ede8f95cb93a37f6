import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { adjudicatorHubChain, type HubChain } from '@trickle/hub/chain-watcher';
import { hashPreimage } from '@trickle/protocol/locks';
import type { Bytes32 } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

const CHALLENGE = 2n;

/**
 * A payee that could not reach the hub revealed the preimage on-chain in time, and the hub's chain follower has not
 * read the reveal (behind: here it never hears of reveals). The adjudicator gives the payer's lock to the hub, whose
 * lock toward the payee it pays out; past the expiry the payer proposes taking its lock back. The hub reads the
 * preimage registry before it answers: refused LOCK_CLAIMED. Before, the hub countersigned it and paid the payee for
 * nothing.
 */
describe('a payer taking back its lock whose preimage is on-chain in time, the hub’s follower behind', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4, client: { minLockSeconds: 0 } });
    const chain = adjudicatorHubChain({
      provider: w.chain.provider,
      chainId: w.chain.chainId,
      adjudicator: w.adjudicator,
      runner: w.chain.wallet(1),
    });
    const behind: HubChain = {
      ...chain,
      poll: async (from) => ({ ...(await chain.poll(from)), reveals: [] }),
    };
    await w.startHub({
      storePath: join(w.dir, 'hub-behind'),
      limits: { lockMarginSeconds: 1 },
      more: { chain: behind },
    });
  });
  afterAll(async () => w?.close());

  it('is refused LOCK_CLAIMED: the lock stays in the payer’s channel', async () => {
    const hub = w.hub!;
    const payer = await w.client(2);
    const payee = await w.client(3);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    await w.hubDeposit(bch.channelId, 1_000_000n);
    const key = `0x${randomBytes(32).toString('hex')}` as Bytes32;
    const hash = hashPreimage(key);
    let offered = false;
    bch.onConditionalPayment(() => {
      offered = true;
    });
    // The lock expires by the chain's clock, which runs ahead of the wall clock on this busy EDR chain: leave room.
    const ahead = Number((await w.chain.provider.getBlock('latest'))!.timestamp) - Math.floor(Date.now() / 1000);
    const handle = payer.channel(ach.channelId)!.pay(555n, {
      to: payee.address,
      lock: { hash, expiresIn: Math.max(ahead, 0) + 8 },
    });
    await handle.locked;
    await waitFor(() => offered && (hub.channels.get(bch.channelId)!.locks ?? []).length === 1);
    const expiry = hub.channels.get(ach.channelId)!.locks![0]!.expiry;
    // The payee is cut off from the hub and reveals on-chain instead (as its lock guard does).
    await payee.disconnect();
    await new Adjudicator(w.adjudicator, w.chain.wallet(3)).reveal(key);
    const revealedAt = await new Adjudicator(w.adjudicator, w.chain.provider).revealedAt(hash);
    expect(revealedAt).toBeGreaterThan(0n);
    expect(revealedAt).toBeLessThanOrEqual(expiry);

    // Past the expiry by the wall clock, which the payer's engine goes by, it proposes taking the lock back.
    await waitFor(() => Date.now() / 1000 > Number(expiry) + 4, 60_000);
    expect(hub.channels.get(ach.channelId)!.latest.state).toMatchObject({ paidByDevice: 0n, lockedByDevice: 555n });
    expect(ach.latest.state.lockedByDevice).toBe(555n);
    await payer.disconnect();
  }, 90_000);
});
