// The benchmark's world: a chain server process with the adjudicator, device keys with ETH channels opened on-chain,
// and a real `trickle-hub` process (LMDB store in a temporary directory) on loopback.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Wallet } from 'ethers';
import { startChainServer } from '@trickle/devchain/chainServer';
import { spawnHub } from '@trickle/hub/spawn';
import { deployAdjudicator } from '@trickle/chain/deploy';
import { keccak256, toHex } from '@trickle/protocol/hex';
import { channelIdOf } from '@trickle/protocol/eip712';
import { ETH_TOKEN } from '@trickle/protocol/types';

const utf8 = (s) => new TextEncoder().encode(s);
/** Deterministic device key number `i` of a named group (test keys, never for value). */
export const deviceKey = (group, i) => toHex(keccak256(utf8(`trickle-bench/${group}/${i}`)));

/**
 * Start the chain server and deploy the adjudicator. Account 0 deploys, account 1 is the hub. Device keys are
 * generated and funded with `hardhat_setBalance` (the chain server serves at most 1,000 accounts).
 */
export async function startChain() {
  const server = await startChainServer({ accounts: 3 });
  try {
    const adjudicator = await deployAdjudicator(server.wallet(0));
    return { server, adjudicator };
  } catch (e) {
    await server.stop();
    throw e;
  }
}

/**
 * Open one ETH channel per key on-chain, each sent by its device (signed locally, nonce 0, fixed gas), `concurrency`
 * transactions at a time; checks every receipt.
 * @returns per device: { key, address, params }
 */
export async function openChannels(server, adjudicator, keys, { deposit, concurrency = 8, group }) {
  const wallets = keys.map((k) => new Wallet(k));
  const balance = `0x${(deposit * 10n + 10n ** 19n).toString(16)}`;
  await pool(wallets, 16, (w) => server.provider.send('hardhat_setBalance', [w.address, balance]));
  const fee = await server.provider.getFeeData();
  const hub = server.addresses[1];
  const devices = wallets.map((w, i) => ({
    key: keys[i],
    address: w.address,
    params: {
      chainId: server.chainId,
      adjudicator: adjudicator.address,
      device: w.address,
      hub,
      token: ETH_TOKEN,
      challengeDuration: 3600n,
      salt: toHex(keccak256(utf8(`${group}/salt/${i}`))),
    },
  }));
  for (const d of devices) d.channelId = channelIdOf(d.params);
  const hashes = await pool(devices, concurrency, async (d, i) => {
    const data = adjudicator.contract.interface.encodeFunctionData('open', [d.params, deposit]);
    const raw = await wallets[i].signTransaction({
      to: adjudicator.address,
      data,
      value: deposit,
      nonce: 0,
      gasLimit: 250_000n,
      chainId: server.chainId,
      type: 2,
      maxFeePerGas: fee.maxFeePerGas * 4n,
      maxPriorityFeePerGas: fee.maxPriorityFeePerGas,
    });
    return server.provider.send('eth_sendRawTransaction', [raw]);
  });
  const receipts = await pool(hashes, concurrency, (h) => server.provider.send('eth_getTransactionReceipt', [h]));
  const failed = receipts.filter((r) => !r || r.status !== '0x1').length;
  if (failed > 0) throw new Error(`${failed} of ${keys.length} channel opens failed on-chain`);
  return devices;
}

/** Map with at most `n` calls in flight. */
export async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/**
 * Spawn the `trickle-hub` bin, as an operator would, and wait for its `listening` line.
 * @param o.nodeArgs - extra node flags (e.g. `--cpu-prof`)
 * @param o.hubArgs - extra trickle-hub flags
 */
export async function startHubProcess({ rpc, adjudicator, hubKey, dir, nodeArgs = [], hubArgs = [] }) {
  const keyFile = join(dir, 'hub.key');
  writeFileSync(keyFile, `${hubKey}\n`, { mode: 0o600 });
  const hub = await spawnHub(
    [
      '--rpc',
      rpc,
      '--adjudicator',
      adjudicator,
      '--key-file',
      keyFile,
      '--store',
      join(dir, 'hub-store'),
      '--port',
      '0',
      '--poll-ms',
      '1000',
      '--log-level',
      'warn',
      ...hubArgs,
    ],
    { nodeArgs },
  );
  const httpUrl = hub.url.replace(/^ws:/, 'http:').replace(/\/$/, '');
  return { child: hub.child, url: hub.url, metricsUrl: `${httpUrl}/metrics`, stderr: hub.stderr, stop: hub.stop };
}
