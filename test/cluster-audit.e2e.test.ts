import { describe, expect, it } from 'vitest';
import { Adjudicator } from '@trickle/chain/adjudicator';
import type { ChannelId } from '@trickle/protocol/types';
import { clusterWorld, sql, until } from './helpers/cluster-world.js';

/**
 * Audit cases of a cluster of `trickle-hub` processes on one PostgreSQL database (real server, real chain, real
 * processes behind the TCP balancer).
 */
describe('hub cluster audit', () => {
  const LEASE_MS = 1500;
  const DEPOSIT = 1_000_000n;
  const w = clusterWorld({ name: 'trickle-cluster-audit', accounts: 4, firstFunded: 2, leaseMs: LEASE_MS });
  const owner = async (url: string, channelId: ChannelId) =>
    (
      await sql<{ owner_url: string; expired: boolean }>(
        url,
        'SELECT owner_url, expires_at <= clock_timestamp() AS expired FROM trickle_leases WHERE channel_id = $1',
        [channelId],
      )
    )[0];

  it('a stale force close made while no process held the channel is challenged by the process that takes it over', async () => {
    const { url } = await w.startCluster();
    const c = await w.connect(url, 2);
    const ch = await c.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: 60n });
    await ch.pay(5n);
    const stale = ch.latest; // both signed: the device has paid 5
    await ch.pay(100_000n);
    const latest = ch.latest; // both signed: the device has paid 100,005
    expect(latest.state.version).toBeGreaterThan(stale.state.version);
    await c.disconnect(); // its process releases the channel's lease: nobody holds it now
    await until(async () => (await owner(url, ch.channelId))?.expired === true, 10_000);

    // The device force-closes at the older state, which takes back what it paid since; every process's chain
    // follower sees the close, none holds the channel.
    const adj = new Adjudicator(w.adjudicator, w.chain.wallet(2));
    await adj.forceClose(stale);
    await new Promise((r) => setTimeout(r, 2_000));

    // The device comes back: a process takes the channel over and reads it from the chain (closing at the old state).
    const again = await w.connect(url, 2);
    await until(async () => (await owner(url, ch.channelId))?.expired === false, 15_000);
    // That process must answer the stale registration with the hub's latest state before the challenge period ends
    // (before: it marked the channel closing and never challenged: the device would settle at the older state).
    let registered = 0n;
    await until(async () => {
      registered = (await adj.getChannel(ch.channelId)).version;
      return registered === latest.state.version;
    }, 20_000).catch(() => undefined);
    expect(registered).toBe(latest.state.version);
    await again.disconnect();
  });
});
