import { describe, expect, it } from 'vitest';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { balanceOf } from '@trickle/chain/erc20';
import type { LockGuardEvent } from '@trickle/client/client';
import { isTrickleError } from '@trickle/protocol/errors';
import { worldWithHub, outcomeCode } from './helpers/hub-world.js';
import { waitFor } from './helpers/wait.js';

/**
 * A device away for a long time (no watchtower) while the hub force-closes its channel with a state from before a
 * credit: back within the challenge period, its client notices, challenges with its latest state and settles after
 * the deadline; `pay()` and `close()` are typed refusals that send nothing. Real hub and chain.
 */
describe('red team: the hub force-closes while the device is away', () => {
  const world = worldWithHub();

  const code = outcomeCode;

  it('back within the challenge period: challenged with the latest state, settled after it for exactly what the latest state pays; close() is CHANNEL_FINAL, nothing sent', async () => {
    const w = world();
    const hub = w.hub!;
    const c = await w.client(2, { lockGuard: false });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 60n });
    await w.hubDeposit(ch.channelId, 1_000_000n);
    await hub.credit(ch.channelId, 100n);
    await ch.pay(10n);
    const old = structuredClone(hub.channels.get(ch.channelId)!.latest);
    await hub.credit(ch.channelId, 5_000n);
    await ch.pay(1n);
    const latest = ch.latest.state;
    await c.disconnect();
    await new Adjudicator(w.adjudicator, w.chain.wallet(1)).forceClose(old);

    const events: LockGuardEvent[] = [];
    const c2 = await w.client(2, { lockGuard: { pollMs: 100, onEvent: (e) => void events.push(e) } });
    const ch2 = c2.channels()[0]!;
    await waitFor(() => events.some((e) => e.type === 'challenged'), 30_000);
    expect(events.find((e) => e.type === 'challenged')).toMatchObject({ version: latest.version });
    expect(await code(ch2.pay(1n))).toBe('CHANNEL_FINAL'); // marked closing
    const reader = new Adjudicator(w.adjudicator, w.chain.provider);
    expect(await reader.getChannel(ch.channelId)).toMatchObject({ status: 'closing', version: latest.version });

    // close() while it is closing on-chain: CHANNEL_FINAL at once, no transaction (before: a cooperative close the hub
    // refused until the timeout, then a force close that reverted: CHAIN_REVERTED)
    const nonce = await w.chain.provider.getTransactionCount(w.chain.addresses[2]!);
    const closing = await c2.close(ch.channelId, { timeoutMs: 2_000 }).catch((e: unknown) => e);
    expect(isTrickleError(closing, 'CHANNEL_FINAL') && closing.details).toMatchObject({ status: 'closing' });
    expect(await w.chain.provider.getTransactionCount(w.chain.addresses[2]!)).toBe(nonce);

    const before = await balanceOf(w.chain.provider, w.token, w.chain.addresses[2]!);
    await w.chain.increaseTime(61);
    await waitFor(() => events.some((e) => e.type === 'settled'), 30_000);
    expect((await balanceOf(w.chain.provider, w.token, w.chain.addresses[2]!)) - before).toBe(
      1_000_000n - latest.paidByDevice + latest.paidByHub,
    );
    expect(events.filter((e) => e.type === 'failed')).toEqual([]);
    expect(await code(ch2.pay(1n))).toBe('CHANNEL_FINAL');
    const closed = await c2.close(ch.channelId).catch((e: unknown) => e);
    expect(isTrickleError(closed, 'CHANNEL_FINAL') && closed.details).toMatchObject({ status: 'closed' });
  }, 120_000);
});
