// Shared set-up for end-to-end tests: a real EDR chain, the compiled adjudicator and a USDT-like token, a hub on
// loopback with an LMDB store in a temporary directory, and device clients with file stores.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startLocalChain, type LocalChain } from '@trickle/devchain/localChain';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { waitFor } from './wait.js';
import { nobleSigner } from '@trickle/protocol/signer';
import { nativeSigner } from '@trickle/protocol/native';
import type { Address } from '@trickle/protocol/types';
import { createHub, type Hub, type HubOptions } from '@trickle/hub/hub';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { adjudicatorHubChain } from '@trickle/hub/chain-watcher';
import type { HubLimits } from '@trickle/hub/options';
import type { MarketOptions } from '@trickle/hub/market-clock';
import { TrickleClient, type ClientOptions } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';

export interface World {
  chain: LocalChain;
  adjudicator: Address;
  token: Address;
  hubKey: `0x${string}`;
  dir: string;
  hub?: Hub;
  startHub(opts?: {
    limits?: Partial<HubLimits>;
    storePath?: string;
    /** The market; it settles in the world's token unless it names another. */
    market?: Omit<MarketOptions, 'token'> & { token?: Address };
    more?: Partial<HubOptions>;
  }): Promise<Hub>;
  /** The hub deposits into a channel (to be able to pay the device) and waits until it has seen it. */
  hubDeposit(channelId: `0x${string}`, amount: bigint): Promise<void>;
  client(index: number, opts?: Partial<ClientOptions>): Promise<TrickleClient>;
  close(): Promise<void>;
}

/**
 * Account 0 deploys, account 1 is the hub, accounts 2.. are devices. `client`: options every `client()` of this world
 * starts from (each call's own win).
 */
export async function createWorld(opts: { accounts?: number; client?: Partial<ClientOptions> } = {}): Promise<World> {
  const chain = await startLocalChain({ accounts: opts.accounts ?? 12 });
  const deployer = chain.wallet(0);
  const adj = await deployAdjudicator(deployer);
  const usdt = await deployToken(deployer, 'usdt');
  for (let i = 2; i < chain.accounts.length; i++)
    await mintTestToken(deployer, usdt.address, chain.addresses[i]!, 1_000_000_000_000n);
  await mintTestToken(deployer, usdt.address, chain.addresses[1]!, 1_000_000_000_000n);
  const dir = mkdtempSync(join(tmpdir(), 'trickle-e2e-'));
  const clients: TrickleClient[] = [];
  const world: World = {
    chain,
    adjudicator: adj.address,
    token: usdt.address,
    hubKey: chain.accounts[1]!,
    dir,
    async startHub(o = {}) {
      const hub = await createHub({
        signer: nativeSigner(chain.accounts[1]!),
        // Opened only when the test brings none: an unused one would hold its path's lock until the process ends.
        store: o.more?.store ?? openLmdbStore({ path: o.storePath ?? join(dir, 'hub-store') }),
        chain: adjudicatorHubChain({
          provider: chain.provider,
          chainId: chain.chainId,
          adjudicator: adj.address,
          runner: chain.wallet(1),
        }),
        limits: { minChallengeSeconds: 1, ...o.limits }, // tests open channels with challenge periods of seconds
        market: o.market && { token: usdt.address, ...o.market },
        logger: pino({ level: process.env['TRICKLE_TEST_LOG'] ?? 'silent' }),
        chainPollMs: 100,
        ...o.more,
      });
      world.hub = hub;
      return hub;
    },
    async hubDeposit(channelId, amount) {
      const wallet = chain.wallet(1);
      await approve(wallet, usdt.address, adj.address, amount);
      const before = world.hub!.channels.get(channelId as never)?.funding.hub ?? 0n;
      await new Adjudicator(adj.address, wallet).deposit(channelId as never, amount);
      await waitFor(() => (world.hub!.channels.get(channelId as never)?.funding.hub ?? 0n) >= before + amount);
    },
    async client(index, o = {}) {
      const c = await TrickleClient.connect({
        url: world.hub!.url,
        signer: nobleSigner(chain.accounts[index]!),
        store: fileChannelStore(join(dir, `device-${index}`)),
        chain: adjudicatorClientChain({
          wallet: chain.wallet(index),
          chainId: chain.chainId,
          adjudicator: adj.address,
        }),
        ...opts.client,
        ...o,
      });
      clients.push(c);
      return c;
    },
    async close() {
      // A hub that fails to shut down fails the test file (close() is idempotent: one a test closed already is not
      // closed twice); the chain and the directory go either way.
      try {
        await Promise.all(clients.map((c) => c.disconnect()));
        await world.hub?.close();
      } finally {
        await chain.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  return world;
}
