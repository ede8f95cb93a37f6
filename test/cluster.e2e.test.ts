import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { isTrickleError } from '@trickle/protocol/errors';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Address } from '@trickle/protocol/types';
import { spawnHub, type HubProcess } from '@trickle/hub/spawn';
import { openPostgresStore } from '@trickle/hub/store/postgres';
import type { ChannelRecord } from '@trickle/hub/store/types';
import { TrickleClient } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import type { ClientChannel } from '@trickle/client/channel';
import { freePort } from './helpers/hub-process.js';
import { startBalancer, type Balancer } from './helpers/balancer.mjs';
import { waitFor } from './helpers/wait.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.mjs';

/**
 * Three `trickle-hub` processes share one PostgreSQL database (`--store postgres://… --cluster-lease-ms`) behind a
 * TCP load balancer; devices stream payments through it. Each scenario disturbs the cluster mid-stream, and then
 * checks every row against every device: each device's newest state is the one stored (one content per version),
 * the streams end at the totals the devices were acked for, and every channel's payouts sum to its deposits.
 */
describe('hub cluster on PostgreSQL: three processes, leases, failover', () => {
  const LEASE_MS = 1500;
  const DEPOSIT = 100_000_000n;
  let chain: ChainServer;
  let pgServer: TestPostgres;
  let dir: string;
  let adjudicator: Address;
  let token: Address;
  let keyFile: string;
  let hubs: HubProcess[] = [];
  let balancer: Balancer | undefined;
  let clients: TrickleClient[] = [];

  beforeAll(async () => {
    [chain, pgServer] = await Promise.all([startChainServer({ accounts: 12 }), startPostgres()]);
    dir = mkdtempSync(join(tmpdir(), 'trickle-cluster-'));
    const deployer = chain.wallet(0);
    adjudicator = (await deployAdjudicator(deployer)).address;
    token = (await deployToken(deployer, 'usdt')).address;
    for (let i = 2; i < 12; i++) await mintTestToken(deployer, token, chain.addresses[i]!, 10n ** 12n);
    keyFile = join(dir, 'hub.key');
    writeFileSync(keyFile, `${chain.accounts[1]}\n`, { mode: 0o600 });
  });
  afterEach(async () => {
    for (const c of clients) await c.disconnect();
    clients = [];
    await balancer?.close();
    await Promise.all(hubs.map((h) => h.kill('SIGKILL')));
    hubs = [];
  });
  afterAll(async () => {
    await chain?.stop();
    await pgServer?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Three hub processes on a fresh database, a balancer in front, and one device per process. */
  async function cluster(devices: number[]) {
    const url = await pgServer.createDatabase();
    const ports = await Promise.all([0, 1, 2].map(() => freePort()));
    hubs = await Promise.all(
      ports.map((port) =>
        spawnHub([
          '--rpc',
          chain.url,
          '--adjudicator',
          adjudicator,
          '--key-file',
          keyFile,
          '--store',
          url,
          '--cluster-lease-ms',
          String(LEASE_MS),
          '--port',
          String(port),
          '--poll-ms',
          '200',
          '--log-level',
          'warn',
          '--crypto-threads',
          '0',
        ]),
      ),
    );
    balancer = await startBalancer(ports);
    const channels: ClientChannel[] = [];
    for (const i of devices) {
      const c = await TrickleClient.connect({
        url: balancer.url,
        signer: nobleSigner(chain.accounts[i]!),
        store: fileChannelStore(join(dir, `${url.slice(url.lastIndexOf('/') + 1)}-device-${i}`)),
        chain: adjudicatorClientChain({ wallet: chain.wallet(i), chainId: chain.chainId, adjudicator }),
        reconnect: { initialDelayMs: 50, maxDelayMs: 300 },
        requestTimeoutMs: 3_000,
      });
      clients.push(c);
      channels.push(await c.openChannel({ token, deposit: DEPOSIT }));
    }
    // Device k went to process k (round robin).
    expect(balancer.placed.slice(0, devices.length)).toEqual(ports.slice(0, devices.length));
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
    const pg = (await import('pg')).default;
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return (
        await c.query<{ owner_url: string }>('SELECT owner_url FROM trickle_leases WHERE channel_id = $1', [channelId])
      ).rows[0]?.owner_url;
    } finally {
      await c.end();
    }
  }

  async function diag<T>(streams: Promise<T>[], channels: ClientChannel[]): Promise<T[]> {
    const timer = setTimeout(() => {
      console.log(
        'DIAG',
        acked,
        channels.map((c) => [String(c.latest.state.version), c.pendingPayments]),
        balancer!.placed,
      );
      for (const h of hubs)
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
    await hubs[0]!.kill('SIGKILL');
    const ackedAtKill = acked[0]!;
    // While nobody holds the channel, its device tops it up on-chain: the next owner must see that deposit, whether
    // its chain follower met the event before or after it took the channel.
    const topUp = 1_000n;
    const wallet = chain.wallet(2);
    await approve(wallet, token, adjudicator, topUp);
    await new Adjudicator(adjudicator, wallet).deposit(channels[0]!.channelId, topUp);
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
    expect(balancer!.placed.length).toBeGreaterThan(3);
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
    hubs[0]!.child.kill('SIGSTOP');
    const versionAtStop = channels[0]!.latest.state.version;
    // The balancer's health check fails and it cuts the paused process's connections: the device reconnects to
    // another process, which takes its channel over once the paused one's lease has lapsed.
    balancer!.drop(ports[0]!);
    await new Promise((r) => setTimeout(r, 3 * LEASE_MS));
    const versionWhileStopped = channels[0]!.latest.state.version;
    hubs[0]!.child.kill('SIGCONT');
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
    expect(balancer!.placed.length).toBeGreaterThan(3);
    expect(await health(ports[0]!)).toMatchObject({ status: 'ok', leases: 0, database: 'ok' });
  });

  it('a device the balancer moves off a live process is served by the next one: the first releases its lease on disconnect', async () => {
    const { url, ports, channels } = await cluster([11, 3, 4]);
    const streams = channels.map((ch, d) => stream(ch, 400, d));
    await waitFor(() => acked[0]! >= 100, 20_000);
    balancer!.drop(ports[0]!); // a live process leaves the rotation (say, for maintenance)
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

  it('restart PostgreSQL mid-stream: the hubs answer STORE_FAILURE, keep their sockets, and resume with nothing lost', async () => {
    const { url, ports, channels } = await cluster([8, 9, 10]);
    const streams = channels.map((ch, d) => stream(ch, 400, d));
    await waitFor(() => acked.every((n) => n >= 100), 20_000);
    const placedBefore = balancer!.placed.length;
    await pgServer.stop();
    // While it is down the hubs say so on /health (their lease renewals and commits fail).
    await new Promise((r) => setTimeout(r, LEASE_MS / 2));
    expect(await health(ports[1]!)).toMatchObject({ status: 'degraded', database: 'unreachable' });
    await pgServer.start();
    const results = await diag(streams, channels);
    expect(results.some((r) => r.retried > 0)).toBe(true);
    // Nobody reconnected: the sockets stayed up through the outage.
    expect(balancer!.placed.length).toBe(placedBefore);
    await check(
      url,
      channels,
      results.map((r) => r.total),
    );
  });
});
