import { describe, expect, it } from 'vitest';
import { approve } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { isTrickleError } from '@trickle/protocol/errors';
import { openPostgresStore } from '@trickle/hub/store/postgres';
import type { ChannelRecord } from '@trickle/hub/store/types';
import type { ClientChannel } from '@trickle/client/channel';
import { waitFor } from './helpers/wait.js';
import { clusterWorld, sql, until } from './helpers/cluster-world.js';
import { RawDevice } from './helpers/raw-device.js';
import { nobleSigner } from '@trickle/protocol/signer';

/**
 * Three `trickle-hub` processes share one PostgreSQL database (`--store postgres://… --cluster-lease-ms`) behind a
 * TCP load balancer; devices stream payments through it. Each scenario disturbs the cluster mid-stream, and then
 * checks every row against every device: each device's newest state is the one stored (one content per version),
 * the streams end at the totals the devices were acked for, and every channel's payouts sum to its deposits.
 */
describe('hub cluster on PostgreSQL: three processes, leases, failover', () => {
  const LEASE_MS = 1500;
  const DEPOSIT = 100_000_000n;
  const w = clusterWorld({ name: 'trickle-cluster', accounts: 12, firstFunded: 2, leaseMs: LEASE_MS });

  /** Three hub processes on a fresh database, a balancer in front, and one device per process. */
  async function cluster(devices: number[]) {
    const { url, ports } = await w.startCluster();
    const channels: ClientChannel[] = [];
    for (const i of devices) {
      const c = await w.connect(url, i);
      channels.push(await c.openChannel({ token: w.token, deposit: DEPOSIT }));
    }
    // Device k went to process k (round robin).
    expect(w.balancer!.placed.slice(0, devices.length)).toEqual(ports.slice(0, devices.length));
    return { url, ports, channels };
  }

  /**
   * Pays `count` payments from a channel, 20 in flight. A payment refused with STORE_FAILURE or DISCONNECTED (the
   * database or the process was down) is paid again later; the total is what the hub acked.
   */
  const acked: number[] = [];
  async function stream(ch: ClientChannel, count: number, d: number): Promise<{ total: bigint; retried: number }> {
    acked[d] = 0;
    let total = 0n;
    let retried = 0;
    let k = 0;
    const one = async (amount: bigint): Promise<void> => {
      for (;;) {
        try {
          await ch.pay(amount);
          total += amount;
          acked[d]!++;
          return;
        } catch (e) {
          if (!isTrickleError(e) || !['STORE_FAILURE', 'DISCONNECTED', 'TIMEOUT'].includes(e.code)) throw e;
          retried++;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    const workers = Array.from({ length: 20 }, async () => {
      while (k < count) {
        const amount = BigInt(1 + ((k++ + d) % 5));
        await one(amount);
      }
    });
    await Promise.all(workers);
    return { total, retried };
  }

  /** `/health` of the process on `port`. */
  const health = async (port: number) =>
    (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as {
      status: string;
      leases: number;
      database: string;
    };
  /** The URL of the process holding a channel's lease. */
  async function ownerOf(url: string, channelId: string): Promise<string | undefined> {
    return (
      await sql<{ owner_url: string }>(url, 'SELECT owner_url FROM trickle_leases WHERE channel_id = $1', [channelId])
    )[0]?.owner_url;
  }

  async function diag<T>(streams: Promise<T>[], channels: ClientChannel[]): Promise<T[]> {
    const timer = setTimeout(() => {
      console.log(
        'DIAG',
        acked,
        channels.map((c) => [String(c.latest.state.version), c.pendingPayments]),
        w.balancer!.placed,
      );
      for (const h of w.hubs)
        console.log(
          'HUBLOG',
          h
            .stderr()
            .split('\n')
            .filter((l) => !l.includes('"msg":"device authenticated"'))
            .slice(-12)
            .join('\n'),
        );
    }, 35_000);
    try {
      return await Promise.all(streams);
    } finally {
      clearTimeout(timer);
    }
  }
  /** The device's deposit in a channel's stored record. */
  async function storedFunding(url: string, channelId: string): Promise<bigint | undefined> {
    const store = openPostgresStore({ url });
    try {
      return (await store.loadChannels()).find((r) => r.channelId === channelId)?.funding.device;
    } finally {
      await store.close();
    }
  }

  /** The invariants over all rows and all device records. */
  async function check(
    url: string,
    channels: ClientChannel[],
    totals: bigint[],
    deposits: bigint[] = channels.map(() => DEPOSIT),
  ) {
    const store = openPostgresStore({ url });
    const records = await store.loadChannels();
    await store.close();
    for (const [d, ch] of channels.entries()) {
      const r: ChannelRecord = records.find((x) => x.channelId === ch.channelId)!;
      expect(r).toBeDefined();
      // The stored state is the device's: same version, same content (nothing signed twice at one version).
      expect(r.latest).toEqual(ch.latest);
      expect(r.latest.state.paidByDevice).toBe(totals[d]);
      const deviceGets = r.funding.device - r.latest.state.paidByDevice + r.latest.state.paidByHub;
      const hubGets = r.funding.hub - r.latest.state.paidByHub + r.latest.state.paidByDevice;
      expect(deviceGets).toBeGreaterThanOrEqual(0n);
      expect(hubGets).toBeGreaterThanOrEqual(0n);
      expect(deviceGets + hubGets).toBe(r.funding.device + r.funding.hub);
      expect(r.funding.device).toBe(deposits[d]);
    }
  }

  it('SIGKILL one process mid-stream: its device moves to another, every acked state is kept, streams finish exactly', async () => {
    const { url, ports, channels } = await cluster([2, 3, 4]);
    const streams = channels.map((ch, d) => stream(ch, 600, d));
    await waitFor(() => acked[0]! >= 100, 20_000);
    expect(await ownerOf(url, channels[0]!.channelId)).toBe(`ws://127.0.0.1:${ports[0]}/`);
    const killedAt = performance.now();
    await w.hubs[0]!.kill('SIGKILL');
    const ackedAtKill = acked[0]!;
    // While nobody holds the channel, its device tops it up on-chain: the next owner must see that deposit, whether
    // its chain follower met the event before or after it took the channel.
    const topUp = 1_000n;
    const wallet = w.chain.wallet(2);
    await approve(wallet, w.token, w.adjudicator, topUp);
    await new Adjudicator(w.adjudicator, wallet).deposit(channels[0]!.channelId, topUp);
    await waitFor(() => acked[0]! > ackedAtKill + 20, 20_000);
    const failoverMs = performance.now() - killedAt;
    const results = await diag(streams, channels);
    for (let i = 0; i < 100 && (await storedFunding(url, channels[0]!.channelId)) !== DEPOSIT + topUp; i++)
      await new Promise((r) => setTimeout(r, 100));
    await check(
      url,
      channels,
      results.map((r) => r.total),
      [DEPOSIT + topUp, DEPOSIT, DEPOSIT],
    );
    // Where it went: the balancer placed the reconnection on a live process, which holds the lease now.
    expect(w.balancer!.placed.length).toBeGreaterThan(3);
    const newOwner = await ownerOf(url, channels[0]!.channelId);
    expect([`ws://127.0.0.1:${ports[1]}/`, `ws://127.0.0.1:${ports[2]}/`]).toContain(newOwner);
    const h = await health(Number(new URL(newOwner!).port));
    expect(h).toMatchObject({ status: 'ok', database: 'ok' });
    expect(h.leases).toBeGreaterThanOrEqual(2); // its own device's channel and the one it took over
    console.log(
      `cluster SIGKILL: first acked payment on the new owner ${Math.round(failoverMs)} ms after the kill (lease ${LEASE_MS} ms)`,
    );
  });

  it('SIGSTOP one process past its lease, then SIGCONT: it stops serving the channel, its late writes are refused', async () => {
    const { url, ports, channels } = await cluster([5, 6, 7]);
    const streams = channels.map((ch, d) => stream(ch, 400, d));
    await waitFor(() => acked[0]! >= 100, 20_000);
    w.hubs[0]!.child.kill('SIGSTOP');
    const versionAtStop = channels[0]!.latest.state.version;
    // The balancer's health check fails and it cuts the paused process's connections: the device reconnects to
    // another process, which takes its channel over once the paused one's lease has lapsed.
    w.balancer!.drop(ports[0]!);
    await new Promise((r) => setTimeout(r, 3 * LEASE_MS));
    const versionWhileStopped = channels[0]!.latest.state.version;
    w.hubs[0]!.child.kill('SIGCONT');
    const results = await diag(streams, channels);
    // It was served by another process while the first one was paused.
    expect(versionWhileStopped).toBeGreaterThan(versionAtStop);
    await check(
      url,
      channels,
      results.map((r) => r.total),
    );
    // The paused process, running again, holds nothing: its lease was taken over, and it serves that channel no more.
    expect(await ownerOf(url, channels[0]!.channelId)).not.toBe(`ws://127.0.0.1:${ports[0]}/`);
    expect(w.balancer!.placed.length).toBeGreaterThan(3);
    // A late write that failed on its own (a query cut by its timeout while the process was stopped) shows as
    // `store: "failing"` until the hub's store probe lands, within a second or two; the process works, so it is ok then.
    let last: Record<string, unknown> = {};
    await until(async () => (last = await health(ports[0]!))['status'] === 'ok', 10_000).catch(() => undefined);
    expect(last).toMatchObject({ status: 'ok', leases: 0, database: 'ok' });
  });

  it('a device the balancer moves off a live process is served by the next one: the first releases its lease on disconnect', async () => {
    const { url, ports, channels } = await cluster([11, 3, 4]);
    const streams = channels.map((ch, d) => stream(ch, 400, d));
    await waitFor(() => acked[0]! >= 100, 20_000);
    w.balancer!.drop(ports[0]!); // a live process leaves the rotation (say, for maintenance)
    const results = await diag(streams, channels);
    await check(
      url,
      channels,
      results.map((r) => r.total),
    );
    expect([`ws://127.0.0.1:${ports[1]}/`, `ws://127.0.0.1:${ports[2]}/`]).toContain(
      await ownerOf(url, channels[0]!.channelId),
    );
    expect(await health(ports[0]!)).toMatchObject({ status: 'ok', leases: 0 });
  });

  it('a device connecting again to the process that holds its channel keeps the lease: no release and take-back', async () => {
    const { url, channels } = await cluster([2]);
    const ch = channels[0]!;
    await ch.pay(1n);
    const lease = () =>
      sql<{ owner_url: string; epoch: string }>(
        url,
        'SELECT owner_url, epoch FROM trickle_leases WHERE channel_id = $1',
        [ch.channelId],
      );
    const before = await lease();
    expect(before).toHaveLength(1);
    // A second connection of the same device to the same process replaces the first (say, the first is half-open).
    const raw = await RawDevice.connect(before[0]!.owner_url, nobleSigner(w.chain.accounts[2]!));
    raw.send({ t: 'sync', id: 2, channelId: ch.channelId, latest: ch.latest });
    const reply = await raw.next((m) => m.t === 'sync' || m.t === 'error');
    expect(reply.t).toBe('sync'); // served at once: the process still holds the channel
    // Before, the replaced connection's close released the channel's lease and the new one took it again (a new epoch).
    expect(await lease()).toEqual(before);
    raw.close();
  });

  it('PostgreSQL down for longer than the lease: a payment is answered STORE_FAILURE, never left waiting, and the channel pays again once it is back', async () => {
    const { url, channels } = await cluster([5]);
    const ch = channels[0]!;
    await ch.pay(3n);
    await w.pg.stop();
    try {
      // The lease lapses here while the database is down; the next frame has to take it again, and cannot.
      await new Promise((r) => setTimeout(r, LEASE_MS * 1.5));
      const outcome = await Promise.race([
        ch.pay(2n).then(
          () => 'paid',
          (e: unknown) => (isTrickleError(e) ? e.code : String(e)),
        ),
        new Promise((r) => setTimeout(() => r('no answer'), 4 * LEASE_MS + 10_000)),
      ]);
      expect(outcome).toBe('STORE_FAILURE');
    } finally {
      await w.pg.start();
    }
    // Once the database is back the channel takes payments again (the first may still meet the reconnecting pool).
    const until = Date.now() + 30_000;
    for (;;) {
      const code = await ch.pay(4n).then(
        () => undefined,
        (e: unknown) => (isTrickleError(e) ? e.code : String(e)),
      );
      if (code === undefined) break;
      expect(code).toBe('STORE_FAILURE');
      expect(Date.now()).toBeLessThan(until);
      await new Promise((r) => setTimeout(r, 200));
    }
    await check(url, channels, [7n]);
  });

  it('restart PostgreSQL mid-stream: the hubs answer STORE_FAILURE, keep their sockets, and resume with nothing lost', async () => {
    const { url, ports, channels } = await cluster([8, 9, 10]);
    const streams = channels.map((ch, d) => stream(ch, 400, d));
    await waitFor(() => acked.every((n) => n >= 100), 20_000);
    const placedBefore = w.balancer!.placed.length;
    await w.pg.stop();
    // While it is down the hubs say so on /health (their lease renewals and commits fail).
    await new Promise((r) => setTimeout(r, LEASE_MS / 2));
    expect(await health(ports[1]!)).toMatchObject({ status: 'degraded', database: 'unreachable' });
    await w.pg.start();
    const results = await diag(streams, channels);
    expect(results.some((r) => r.retried > 0)).toBe(true);
    // Nobody reconnected: the sockets stayed up through the outage.
    expect(w.balancer!.placed.length).toBe(placedBefore);
    await check(
      url,
      channels,
      results.map((r) => r.total),
    );
  });
});
