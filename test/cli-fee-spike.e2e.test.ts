import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toQuantity } from 'ethers';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { fileChannelStore } from '@trickle/client/store';
import { runTrickle } from './helpers/trickle-bin.js';
import { openWatchedChannel } from './helpers/watched-channel.js';

/**
 * `trickle challenge` during a fee spike. The command sent its challenge once, priced at the node's fee of the moment,
 * and waited for it to be mined with no bound: under a base fee that stayed above that price, the challenge never got
 * into a block and the command waited on past the deadline, while the stale force close won. It is now re-sent with
 * the same nonce and higher fees every 2 blocks (or 15 s), as the watchtower's, until mined or the deadline passes.
 */
const DEVICE = 1;
const HUB = 2;
const RUNNER = 3;

describe('trickle challenge under a fee spike', () => {
  let server: ChainServer;
  let dir: string;
  const rpc = (method: string, params: unknown[] = []) => server.provider.send(method, params);

  beforeAll(async () => {
    server = await startChainServer({ accounts: 4 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-cli-fee-spike-'));
  });
  afterAll(async () => {
    await rpc('evm_setAutomine', [true]).catch(() => undefined);
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is re-priced above the spike and lands before the deadline', async () => {
    const { adj, channelId, sign, record } = await openWatchedChannel(server, { device: DEVICE, hub: HUB, salt: 'f5' });
    const store = join(dir, 'store');
    await fileChannelStore(store).save(record(sign(2n, 300n)));
    const { forceClosed } = await adj.connect(server.wallet(HUB)).forceClose(sign(1n, 100n));
    writeFileSync(join(dir, 'key'), `${server.accounts[RUNNER]}\n`, { mode: 0o600 });

    // From here on blocks are mined by hand, each under a base fee four times the challenge's first price.
    await rpc('evm_setAutomine', [false]);
    const run = runTrickle(['challenge', channelId, '--store', store, '--key-file', join(dir, 'key'), '--json'], {
      rpcUrl: server.url,
      adjudicator: adj.address,
    });
    type PendingTx = { maxFeePerGas: string };
    const pending = async () =>
      ((await rpc('eth_getBlockByNumber', ['pending', true])) as { transactions: PendingTx[] }).transactions;
    let first: PendingTx | undefined;
    while (!(first = (await pending())[0])) await new Promise((r) => setTimeout(r, 20));
    const spike = BigInt(first.maxFeePerGas) * 4n;
    for (let i = 0; i < 40 && (await adj.getChannel(channelId)).version !== 2n; i++) {
      await rpc('hardhat_setNextBlockBaseFeePerGas', [toQuantity(spike)]);
      await rpc('evm_mine');
      await new Promise((r) => setTimeout(r, 300));
    }
    const c = await adj.getChannel(channelId);
    await rpc('evm_setAutomine', [true]);
    const r = await run;
    expect(c.version).toBe(2n);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ ok: true, version: 2n });
    expect(String(r.json.registered)).toBe('1');
    expect(r.stderr).toMatch(/sent again with the same nonce/);
    const receipt = await server.provider.getTransactionReceipt(r.json.tx);
    expect(BigInt((await server.provider.getBlock(receipt!.blockNumber))!.timestamp)).toBeLessThan(
      forceClosed.deadline,
    );
  });
});
