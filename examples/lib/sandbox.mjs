// A throwaway world for the examples: a local chain node (JSON-RPC server process), the adjudicator and a
// USDT-like token deployed on it, and a hub with an embedded LMDB store. In production each piece is real
// infrastructure: the chain is any EVM JSON-RPC endpoint, the hub runs as `trickle-hub`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { nativeSigner } from '@trickle/protocol/native';
import { nobleSigner } from '@trickle/protocol/signer';
import { createHub, openLmdbStore, adjudicatorHubChain } from '@trickle/hub';
import { TrickleClient, fileChannelStore, adjudicatorClientChain } from '@trickle/client';

/** 1 USDT = 1,000,000 base units. */
export const usdt = (x) => BigInt(Math.round(x * 1e6));
export const fmt = (v) => `${(Number(v) / 1e6).toFixed(6)} USDT`;

export async function sandbox({ devices = 4, market } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'trickle-example-'));
  const server = await startChainServer({ accounts: devices + 2 });
  const deployer = server.wallet(0);
  const adjudicator = await deployAdjudicator(deployer);
  const token = await deployToken(deployer, 'usdt');
  for (let i = 1; i < devices + 2; i++) await mintTestToken(deployer, token.address, server.addresses[i], usdt(1_000));
  const hubWallet = server.wallet(1);
  const hub = await createHub({
    signer: nativeSigner(server.accounts[1]),
    store: openLmdbStore({ path: join(dir, 'hub') }),
    chain: adjudicatorHubChain({
      provider: server.provider,
      chainId: server.chainId,
      adjudicator: adjudicator.address,
      runner: hubWallet,
    }),
    logger: pino({ level: 'silent' }),
    chainPollMs: 100,
    market: market && { token: token.address, ...market },
  });
  const clients = [];
  return {
    hub,
    token: token.address,
    /** Connect device `i` (0-based) as a device program would. */
    async device(i) {
      const client = await TrickleClient.connect({
        url: hub.url,
        signer: nobleSigner(server.accounts[i + 2]),
        store: fileChannelStore(join(dir, `device-${i}`)),
        chain: adjudicatorClientChain({
          wallet: server.wallet(i + 2),
          chainId: server.chainId,
          adjudicator: adjudicator.address,
        }),
      });
      clients.push(client);
      return client;
    },
    /** The hub funds its side of a channel so it can pay the device (routed payments, market proceeds). */
    async hubFunds(channel, amount) {
      await approve(hubWallet, token.address, adjudicator.address, amount);
      await new Adjudicator(adjudicator.address, hubWallet).deposit(channel.channelId, amount);
      while ((hub.channels.get(channel.channelId)?.funding.hub ?? 0n) < amount)
        await new Promise((r) => setTimeout(r, 50));
    },
    async close() {
      await Promise.all(clients.map((c) => c.disconnect()));
      await hub.close();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Print a result: JSON with --json, else readable lines. */
export function report(result, lines) {
  if (process.argv.includes('--json'))
    process.stdout.write(`${JSON.stringify(result, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
  else process.stdout.write(`${lines.join('\n')}\n`);
}
