import { afterAll, afterEach, beforeAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Address, ChannelId } from '@trickle/protocol/types';
import { spawnHub, type HubProcess } from '@trickle/hub/spawn';
import { openPostgresStore } from '@trickle/hub/store/postgres';
import type { ChannelRecord } from '@trickle/hub/store/types';
import { TrickleClient, type ClientOptions } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import { freePort } from './hub-process.js';
import { startBalancer, type Balancer } from './balancer.mjs';
import { startPostgres, type TestPostgres } from './postgres.mjs';

export { sql } from './postgres.mjs';

/** What differs between the cluster e2e files. */
export interface ClusterWorldOptions {
  /** Prefix of the temporary directory (key file, device stores). */
  name: string;
  /** Accounts on the dev chain. Account 0 deploys, account 1 is the hub's key. */
  accounts: number;
  /** Accounts `firstFunded` … `accounts - 1` are minted 10^12 test tokens. */
  firstFunded: number;
  /** `--cluster-lease-ms` of every hub process. */
  leaseMs: number;
  /** Options every `connect()` starts from (each call's own win). */
  client?: Partial<ClientOptions>;
}

/**
 * A chain server, a PostgreSQL server, the adjudicator and a token deployed, and the hub's key file (set up once per
 * file); the hub processes, the balancer and the devices of one scenario (torn down after each test).
 */
export interface ClusterWorld {
  readonly chain: ChainServer;
  readonly pg: TestPostgres;
  readonly dir: string;
  readonly adjudicator: Address;
  readonly token: Address;
  readonly keyFile: string;
  /** The hub processes of the current scenario; killed (SIGKILL) after each test. */
  hubs: HubProcess[];
  /** The balancer of the current scenario; closed after each test. */
  balancer: Balancer | undefined;
  /** The devices of the current scenario; disconnected after each test. */
  clients: TrickleClient[];
  /** The arguments of one `trickle-hub` process on database `url`, listening on `port`, then `extra`. */
  hubArgs(url: string, port: number | string, extra?: readonly string[]): string[];
  /**
   * A fresh database, three hub processes on it (`--poll-ms 200` plus `extra` flags) and a balancer in front of
   * them. Sets {@link hubs} and {@link balancer}.
   */
  startCluster(extra?: readonly string[]): Promise<{ url: string; ports: number[] }>;
  /** Device `account` through the balancer, with its own file store for database `url`; added to {@link clients}. */
  /** `options`: more client options (a credit guard, …). */
  connect(
    url: string,
    account: number,
    requestTimeoutMs?: number,
    options?: Pick<ClientOptions, 'creditGuard'>,
  ): Promise<TrickleClient>;
  /** The hub deposits `amount` into each channel, then waits until every channel's row records it. */
  fundByHub(url: string, channelIds: readonly ChannelId[], amount: bigint): Promise<void>;
}

/** Registers the beforeAll/afterEach/afterAll hooks of a cluster world in the enclosing `describe`. */
export function clusterWorld(options: ClusterWorldOptions): ClusterWorld {
  let chain: ChainServer | undefined;
  let pgServer: TestPostgres | undefined;
  let dir: string | undefined;
  let adjudicator: Address | undefined;
  let token: Address | undefined;
  let keyFile: string | undefined;
  const ready = <T>(v: T | undefined): T => {
    if (v === undefined) throw new Error('cluster world used before its beforeAll ran');
    return v;
  };

  const world: ClusterWorld = {
    get chain() {
      return ready(chain);
    },
    get pg() {
      return ready(pgServer);
    },
    get dir() {
      return ready(dir);
    },
    get adjudicator() {
      return ready(adjudicator);
    },
    get token() {
      return ready(token);
    },
    get keyFile() {
      return ready(keyFile);
    },
    hubs: [],
    balancer: undefined,
    clients: [],
    hubArgs(url, port, extra = []) {
      return [
        '--rpc',
        world.chain.url,
        '--adjudicator',
        world.adjudicator,
        '--key-file',
        world.keyFile,
        '--store',
        url,
        '--cluster-lease-ms',
        String(options.leaseMs),
        '--port',
        String(port),
        '--log-level',
        'warn',
        '--crypto-threads',
        '0',
        '--min-challenge-seconds', // tests open channels with challenge periods of seconds
        '1',
        '--market-token', // used by the processes that run a market (--market-round-ms)
        world.token,
        ...extra,
      ];
    },
    async startCluster(extra = []) {
      const url = await world.pg.createDatabase();
      const ports = await Promise.all([0, 1, 2].map(() => freePort()));
      world.hubs = await Promise.all(
        ports.map((port) => spawnHub(world.hubArgs(url, port, ['--poll-ms', '200', ...extra]))),
      );
      world.balancer = await startBalancer(ports);
      return { url, ports };
    },
    async connect(url, account, requestTimeoutMs = 3_000, own = {}) {
      const c = await TrickleClient.connect({
        ...options.client,
        ...own,
        url: ready(world.balancer).url,
        signer: nobleSigner(world.chain.accounts[account]!),
        store: fileChannelStore(join(world.dir, `${url.slice(url.lastIndexOf('/') + 1)}-device-${account}`)),
        chain: adjudicatorClientChain({
          wallet: world.chain.wallet(account),
          chainId: world.chain.chainId,
          adjudicator: world.adjudicator,
        }),
        reconnect: { initialDelayMs: 50, maxDelayMs: 300 },
        requestTimeoutMs,
      });
      world.clients.push(c);
      return c;
    },
    async fundByHub(url, channelIds, amount) {
      const hubWallet = world.chain.wallet(1);
      const asHub = new Adjudicator(world.adjudicator, hubWallet);
      await approve(hubWallet, world.token, world.adjudicator, amount * BigInt(channelIds.length));
      for (const id of channelIds) await asHub.deposit(id, amount);
      // Each channel's holder records the deposit (its chain follower): the other processes read it from the row.
      await until(async () => {
        const rows = await channelRecords(url);
        return channelIds.every((id) => rows.find((r) => r.channelId === id)?.funding.hub === amount);
      }, 20_000);
    },
  };

  beforeAll(async () => {
    [chain, pgServer] = await Promise.all([startChainServer({ accounts: options.accounts }), startPostgres()]);
    dir = mkdtempSync(join(tmpdir(), `${options.name}-`));
    const deployer = chain.wallet(0);
    adjudicator = (await deployAdjudicator(deployer)).address;
    token = (await deployToken(deployer, 'usdt')).address;
    for (let i = options.firstFunded; i < options.accounts; i++)
      await mintTestToken(deployer, token, chain.addresses[i]!, 10n ** 12n);
    keyFile = join(dir, 'hub.key');
    writeFileSync(keyFile, `${chain.accounts[1]}\n`, { mode: 0o600 });
  });
  afterEach(async () => {
    for (const c of world.clients) await c.disconnect();
    world.clients = [];
    await world.balancer?.close();
    world.balancer = undefined;
    await Promise.all(world.hubs.map((h) => h.kill('SIGKILL')));
    world.hubs = [];
  });
  afterAll(async () => {
    await chain?.stop();
    await pgServer?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  return world;
}

/** Poll an asynchronous condition (database reads) until it holds. */
export async function until(cond: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every channel row of database `url`, read through the hub's own PostgreSQL store. */
export async function channelRecords(url: string): Promise<ChannelRecord[]> {
  const store = openPostgresStore({ url });
  try {
    return await store.loadChannels();
  } finally {
    await store.close();
  }
}
