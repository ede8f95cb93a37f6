import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { nobleSigner } from '@trickle/protocol/signer';
import type { PublishedClearing } from '@trickle/market';
import { spawnHub } from '@trickle/hub/spawn';
import { openPostgresStore } from '@trickle/hub/store/postgres';
import { TrickleClient } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import type { ClientChannel } from '@trickle/client/channel';
import { waitFor } from './helpers/wait.js';
import { clusterWorld, sql, until } from './helpers/cluster-world.js';

/**
 * One market run by three `trickle-hub` processes on one PostgreSQL database, behind a TCP balancer: devices
 * connected to different processes trade in one round, the process holding the round lease clears it once, and each
 * participant's net lands exactly once in its channel, credited by whichever process holds that channel. Killing the
 * round leader mid-round: another process takes the round lease and clears the round with every order, the dead
 * leader's device included.
 */
describe('hub cluster market: one round lease, orders from every process, netting lands once', () => {
  const LEASE_MS = 1500;
  const ROUND_MS = 3000;
  const DEPOSIT = 100_000_000n;
  /** What each device pays the hub first, so the hub can afford a seller's proceeds without a deposit of its own. */
  const PREPAID = 1_000_000n;
  const w = clusterWorld({ name: 'trickle-cluster-market', accounts: 12, firstFunded: 2, leaseMs: LEASE_MS });

  /** Three hub processes with a market on a fresh database, a balancer, and one device per account (round robin). */
  async function cluster(accounts: number[]) {
    const { url, ports } = await w.startCluster([
      '--market-round-ms',
      String(ROUND_MS),
      '--market-keep-clearings',
      '1',
    ]);
    const channels: ClientChannel[] = [];
    for (const i of accounts) {
      const c = await w.connect(url, i, 5_000);
      const ch = await c.openChannel({ token: w.token, deposit: DEPOSIT });
      await ch.pay(PREPAID);
      channels.push(ch);
    }
    expect(w.balancer!.placed.slice(0, accounts.length)).toEqual(accounts.map((_, k) => ports[k % ports.length]));
    return { url, ports, channels };
  }

  /**
   * The port of the process holding the round lease. A fresh cluster's processes take it on their first market tick
   * (a quarter lease after they listen), which a busy machine can delay past the devices' setup: wait for a holder,
   * bounded (two lease terms), rather than assume one at a fixed moment.
   */
  async function leaderPort(url: string): Promise<number> {
    const holders = () =>
      sql<{ owner_url: string }>(
        url,
        `SELECT owner_url FROM trickle_leases WHERE channel_id = 'market/round' AND expires_at > clock_timestamp()`,
      );
    let rows: { owner_url: string }[] = [];
    await until(async () => (rows = await holders()).length > 0, 2 * LEASE_MS);
    expect(rows).toHaveLength(1);
    return Number(new URL(rows[0]!.owner_url).port);
  }

  /** A gauge of a process's /metrics. */
  async function gauge(port: number, name: string): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    if (!line) throw new Error(`${name} missing from /metrics of ${port}`);
    return Number(line.split(' ')[1]);
  }

  /** Wait for a fresh round to open (so the orders have the whole round), then every device submits for it. */
  async function tradeOneRound(channels: ClientChannel[]) {
    const [b1, b2, s1, s2] = w.clients as [TrickleClient, TrickleClient, TrickleClient, TrickleClient];
    await Promise.all(w.clients.map((c) => c.market.ready()));
    const r0 = b1.market.round;
    await waitFor(() => b1.market.round > r0, 3 * ROUND_MS);
    const r = b1.market.round;
    const before = channels.map((ch) => ch.latest.state);
    const seen = new Map<bigint, PublishedClearing>();
    for (const c of w.clients) c.market.onClearing((p) => seen.set(p.record.round, p));
    // buyers: 10 at ≤ 1,300 and 5 at ≤ 1,250; sellers: 8 at ≥ 1,100 and 10 at ≥ 1,200
    await Promise.all([
      b1.market.submitOrder(channels[0]!, { market: 'kwh', side: 'bid', quantity: 10n, price: 1_300n, round: r }),
      b2.market.submitOrder(channels[1]!, { market: 'kwh', side: 'bid', quantity: 5n, price: 1_250n, round: r }),
      s1.market.submitOrder(channels[2]!, { market: 'kwh', side: 'ask', quantity: 8n, price: 1_100n, round: r }),
      s2.market.submitOrder(channels[3]!, { market: 'kwh', side: 'ask', quantity: 10n, price: 1_200n, round: r }),
    ]);
    return { r, before, seen };
  }

  /** Each channel moved by exactly its net of round `r`, in one credit (plus a buyer's escrow payment). */
  async function expectNettedOnce(
    channels: ClientChannel[],
    r: bigint,
    before: ClientChannel['latest']['state'][],
    seen: Map<bigint, PublishedClearing>,
  ) {
    await waitFor(() => channels.every((ch) => ch.latest.state.round >= r), 30_000).catch((e: unknown) => {
      for (const h of w.hubs) console.log('HUBLOG', h.stderr().split('\n').slice(-15).join('\n'));
      throw new Error(`round ${r}: channel rounds ${channels.map((ch) => ch.latest.state.round).join(',')}; ${e}`);
    });
    const record = (seen.get(r) ?? w.clients[0]!.market.clearing(r))!.record;
    const kwh = record.markets.find((m) => m.market === 'kwh')!;
    expect(kwh.volume).toBe(15n);
    expect(record.nets.reduce((a, n) => a + n.net, 0n)).toBe(0n);
    for (const [i, ch] of channels.entries()) {
      const net = record.nets.find((n) => n.participant === w.clients[i]!.address)!.net;
      const s = ch.latest.state;
      expect(s.round).toBe(r);
      expect(s.paidByHub - before[i]!.paidByHub - (s.paidByDevice - before[i]!.paidByDevice)).toBe(net);
      // buyers: the escrow payment and the round's credit; sellers: the credit
      expect(s.version - before[i]!.version).toBe(i < 2 ? 2n : 1n);
    }
    return record;
  }

  it('devices on different processes trade in one round: cleared once by the round-lease holder, each net lands once', async () => {
    const { url, ports, channels } = await cluster([2, 3, 4, 5]);
    const { r, before, seen } = await tradeOneRound(channels);
    await expectNettedOnce(channels, r, before, seen);
    // Two more rounds later nothing has moved again: no process paid a credit twice.
    const after = channels.map((ch) => ch.latest);
    const now = w.clients[0]!.market.round;
    await waitFor(() => w.clients[0]!.market.round >= now + 2n, 4 * ROUND_MS);
    expect(channels.map((ch) => ch.latest)).toEqual(after);
    // The stored rows agree with the devices.
    const store = openPostgresStore({ url });
    const records = await store.loadChannels();
    const orders = await store.loadMetaPrefix('market/order/');
    const escrows = await store.loadMetaPrefix('market/escrow/');
    // With --market-keep-clearings 1, the round's record is deleted once it is older than the kept round and every
    // credit it owed has landed (by the channels' stored rounds).
    const clearingKey = `market/clearing/${r.toString().padStart(20, '0')}`;
    let kept = await store.getMeta(clearingKey);
    for (let i = 0; i < 40 && kept !== undefined; i++) {
      await new Promise((res) => setTimeout(res, 300));
      kept = await store.getMeta(clearingKey);
    }
    expect(kept).toBeUndefined();
    await store.close();
    for (const ch of channels) expect(records.find((x) => x.channelId === ch.channelId)!.latest).toEqual(ch.latest);
    expect(orders).toEqual([]); // cleared orders are deleted with the clearing
    expect(escrows).toEqual([]); // and so are the escrows they used
    // One process holds the round lease and says so on /metrics and /health; each holds its own device's channel.
    const leader = await leaderPort(url);
    for (const port of ports) {
      expect(await gauge(port, 'trickle_cluster_round_lease')).toBe(port === leader ? 1 : 0);
      expect(await gauge(port, 'trickle_cluster_database_up')).toBe(1);
      const held = await gauge(port, 'trickle_cluster_leased_channels');
      expect(held).toBe(port === ports[0] ? 2 : 1);
      const health = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as Record<string, unknown>;
      expect(health).toMatchObject({ status: 'ok', database: 'ok', leases: held, roundLease: port === leader });
    }
    // The owner URL of every lease is the bound port of its process.
    const owners = await sql<{ owner_url: string }>(url, 'SELECT DISTINCT owner_url FROM trickle_leases');
    for (const o of owners) expect(ports.map((p) => `ws://127.0.0.1:${p}/`)).toContain(o.owner_url);
  });

  it('SIGKILL the round leader mid-round: another process takes the round lease and clears the round with every order', async () => {
    const { url, ports, channels } = await cluster([6, 7, 8, 9]);
    // The leader is whichever process took the round lease first; its devices are among the traders.
    const leader = await leaderPort(url);
    const { r, before, seen } = await tradeOneRound(channels);
    const killedAt = performance.now();
    await w.hubs[ports.indexOf(leader)]!.kill('SIGKILL');
    const onLeader = channels.filter((_, k) => ports[k % 3] === leader).length;
    expect(onLeader).toBeGreaterThan(0);
    const record = await expectNettedOnce(channels, r, before, seen);
    expect(record.round).toBe(r);
    const newLeader = await leaderPort(url);
    expect(newLeader).not.toBe(leader);
    console.log(
      `cluster market: round ${r} cleared by the new leader, every net landed ${Math.round(performance.now() - killedAt)} ms after the leader was killed (lease ${LEASE_MS} ms, round ${ROUND_MS} ms)`,
    );
    // And only once: another round later, nothing moved again.
    const after = channels.map((ch) => ch.latest);
    const now = w.clients[0]!.market.round;
    await waitFor(() => w.clients[0]!.market.round >= now + 1n, 4 * ROUND_MS);
    expect(channels.map((ch) => ch.latest)).toEqual(after);
  });

  it('restart PostgreSQL mid-round: the round clears once it is back, and every net lands once, idle devices too', async () => {
    const { ports, channels } = await cluster([2, 3, 4, 5]);
    const { r, before, seen } = await tradeOneRound(channels);
    await w.pg.stop();
    // Down for longer than the lease: every lease runs out in the processes (their devices stay connected and idle).
    await new Promise((res) => setTimeout(res, 2 * LEASE_MS));
    const during = (await (await fetch(`http://127.0.0.1:${ports[1]}/health`)).json()) as Record<string, unknown>;
    expect(during).toMatchObject({ status: 'degraded', database: 'unreachable', roundLease: false });
    await w.pg.start();
    // Nobody sends anything: the processes take their idle devices' leases back to pay the round's credits.
    await expectNettedOnce(channels, r, before, seen);
    const after = channels.map((ch) => ch.latest);
    const now = w.clients[0]!.market.round;
    await waitFor(() => w.clients[0]!.market.round >= now + 1n, 4 * ROUND_MS);
    expect(channels.map((ch) => ch.latest)).toEqual(after);
  });

  it('a device moved to another process before its round clears cannot close cooperatively until its escrow came back', async () => {
    const { ports, channels } = await cluster([11]);
    const c = w.clients[0]!;
    const ch = channels[0]!;
    await c.market.ready();
    const r0 = c.market.round;
    await waitFor(() => c.market.round > r0, 3 * ROUND_MS);
    const r = c.market.round;
    const before = ch.latest.state;
    await c.market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 3n, price: 1_000n, round: r }); // nobody sells
    expect(ch.latest.state.paidByDevice - before.paidByDevice).toBe(3_000n); // the escrow, paid through ports[0]
    // The balancer moves the device to another process, which did not take its order or its escrow.
    const placed = w.balancer!.placed.length;
    w.balancer!.drop(ports[0]!);
    await waitFor(() => w.balancer!.placed.length > placed, 10_000);
    expect(ch.latest.state.round).toBeLessThan(r); // the round has not cleared yet
    const result = await c.close(ch.channelId, { timeoutMs: 20_000 });
    expect(result.mode).toBe('cooperative');
    // The new process held the final state back until the round's credit returned the unfilled bid's escrow.
    expect(result.state.state.isFinal).toBe(true);
    expect(result.state.state.round).toBe(r);
    expect(result.state.state.paidByHub - before.paidByHub).toBe(3_000n);
    expect(result.state.state.paidByDevice - before.paidByDevice).toBe(3_000n);
  });

  it('a process started with --port 0 stores its bound port as the owner URL of its leases', async () => {
    const url = await w.pg.createDatabase();
    const hub = await spawnHub(w.hubArgs(url, 0, ['--market-round-ms', String(ROUND_MS)]));
    w.hubs = [hub];
    const port = Number(new URL(hub.url).port);
    expect(port).toBeGreaterThan(0);
    const c = await TrickleClient.connect({
      url: hub.url,
      signer: nobleSigner(w.chain.accounts[10]!),
      store: fileChannelStore(join(w.dir, 'port0-device')),
      chain: adjudicatorClientChain({
        wallet: w.chain.wallet(10),
        chainId: w.chain.chainId,
        adjudicator: w.adjudicator,
      }),
    });
    w.clients.push(c);
    const ch = await c.openChannel({ token: w.token, deposit: DEPOSIT });
    await ch.pay(1n);
    // The round lease is taken by the market timer's first tick: wait for both rows.
    const leases = () =>
      sql<{ channel_id: string; owner_url: string }>(
        url,
        'SELECT channel_id, owner_url FROM trickle_leases ORDER BY channel_id',
      );
    let rows = await leases();
    for (let i = 0; i < 50 && rows.length < 2; i++) {
      await new Promise((res) => setTimeout(res, 100));
      rows = await leases();
    }
    if (rows.length < 2) console.log('LEASES', rows, hub.stderr());
    // the channel's lease and the market's round lease, both advertised at the port the process is bound to
    expect(rows).toEqual([
      { channel_id: ch.channelId, owner_url: hub.url },
      { channel_id: 'market/round', owner_url: hub.url },
    ]);
    expect(hub.url).toBe(`ws://127.0.0.1:${port}/`);
  });
});
