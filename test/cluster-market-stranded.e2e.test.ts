import { describe, expect, it } from 'vitest';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { TrickleError } from '@trickle/protocol/errors';
import { spawnHub } from '@trickle/hub/spawn';
import { openPostgresStore } from '@trickle/hub/store/postgres';
import type { ChannelId } from '@trickle/protocol/types';
import { freePort } from './helpers/hub-process.js';
import { startBalancer } from './helpers/balancer.mjs';
import { waitFor } from './helpers/wait.js';
import { channelRecords, clusterWorld, until } from './helpers/cluster-world.js';

/**
 * A market round credit whose channel closed without it, in a hub cluster (two `trickle-hub` processes on one
 * PostgreSQL database): it is paid once on the participant's next channel in the market's token, as on a single hub
 * (redteam-market-owed.e2e) — while both processes run, whichever serves the device, and after both restart. Before,
 * a cluster kept it owed for ever (the unfilled bid's escrow stayed at the hub).
 */
describe('hub cluster market: a round credit stranded by a closed channel lands once on the next channel', () => {
  const LEASE_MS = 1500;
  const ROUND_MS = 1500;
  const w = clusterWorld({ name: 'trickle-cluster-stranded', accounts: 4, firstFunded: 1, leaseMs: LEASE_MS });

  /** Two hub processes with a market on database `url`, and the balancer in front of them. */
  async function start(url: string, ports: number[]) {
    w.hubs = await Promise.all(
      ports.map((port) => spawnHub(w.hubArgs(url, port, ['--poll-ms', '200', '--market-round-ms', String(ROUND_MS)]))),
    );
    w.balancer = await startBalancer(ports);
  }

  /** The stored state of a channel (whichever process holds it). */
  async function row(url: string, id: ChannelId) {
    const r = (await channelRecords(url)).find((x) => x.channelId === id);
    if (!r) throw new Error(`channel ${id} not stored`);
    return r;
  }

  async function stranded(url: string) {
    const store = openPostgresStore({ url });
    try {
      return await store.loadMetaPrefix('market/stranded/');
    } finally {
      await store.close();
    }
  }

  it('refused, force-closed, a new channel opened: the credit lands on it once, across the processes and a restart', async () => {
    const url = await w.pg.createDatabase();
    const ports = await Promise.all([0, 1].map(() => freePort()));
    await start(url, ports);
    let refuse = true;
    const c = await w.connect(url, 2, 5_000, {
      creditGuard: ({ amount }) => {
        // The device refuses its round credit (as one it could not check yet) until told.
        if (refuse && amount > 0n) throw new TrickleError('BAD_CLEARING', 'not now');
      },
    });
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    await c.market.ready();
    const r0 = c.market.round;
    await waitFor(() => c.market.round > r0, 3 * ROUND_MS); // a fresh round: the order has its whole length
    const r = c.market.round;
    await c.market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 3n, price: 1_000n, round: r }); // no seller
    const escrowed = ch.latest.state.version;
    // The device refuses round r's credit; the hub goes a version up over it (nothing moves), which it countersigns.
    await until(async () => {
      const rec = await row(url, ch.channelId);
      return (rec.unsettled ?? []).length === 0 && ch.latest.state.version > escrowed;
    }, 20_000);
    const last = ch.latest;
    expect(last.state.paidByHub).toBe(0n);
    // It force-closes at the latest state both signed, without the credit; nothing above it to challenge with.
    const adj = new Adjudicator(w.adjudicator, w.chain.wallet(2));
    await adj.forceClose(last);
    await w.chain.increaseTime(3);
    await adj.settle(ch.channelId);
    // The holder's retry finds the channel closed (CHANNEL_NOT_OPEN): the credit is kept owed in the database.
    await until(async () => (await stranded(url)).length === 1, 30_000);
    // The mark can come first: the engine refuses a closing channel too, and the settle reaches the row at the
    // chain watcher's next poll.
    await until(async () => (await row(url, ch.channelId)).status === 'closed', 10_000);
    expect((await row(url, ch.channelId)).status).toBe('closed');

    // A new channel in the market's token, which the hub can pay into: round r's credit lands on it, as round r's.
    refuse = false;
    const ch2 = await c.openChannel({ token: w.token, deposit: 1_000n });
    await w.fundByHub(url, [ch2.channelId], 10_000n);
    await waitFor(() => ch2.latest.state.paidByHub === 3_000n, 20_000);
    expect(ch2.latest.state.round).toBe(r);
    // Its mark goes once the channel's stored state has reached the round.
    await until(async () => (await stranded(url)).length === 0, 20_000);

    // The device moves to the other process, which takes the channel over: nothing is paid again.
    const placed = w.balancer!.placed.length;
    const first = w.balancer!.placed[0]!;
    w.balancer!.drop(first);
    await waitFor(() => w.balancer!.placed.length > placed, 10_000);
    expect(w.balancer!.placed.at(-1)).not.toBe(first);
    const now = c.market.round;
    await waitFor(() => c.market.round >= now + 2n, 6 * ROUND_MS);
    expect(ch2.latest.state.paidByHub).toBe(3_000n);

    // Both processes restart (the device reconnects to one): nothing is paid again either.
    await c.disconnect();
    w.clients = [];
    await w.balancer!.close();
    await Promise.all(w.hubs.map((h) => h.kill('SIGKILL')));
    await start(url, ports);
    const back = await w.connect(url, 2, 5_000);
    await back.market.ready();
    const then = back.market.round;
    await waitFor(() => back.market.round >= then + 3n, 10 * ROUND_MS);
    const rec = await row(url, ch2.channelId);
    expect(rec.latest.state.paidByHub).toBe(3_000n);
    expect(rec.latest.state.round).toBe(r);
    expect(back.channel(ch2.channelId)!.latest.state).toEqual(rec.latest.state);
    expect(await stranded(url)).toEqual([]);
  });
});
