import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { deployAdjudicator } from '@trickle/chain/deploy';
import { hashPreimage } from '@trickle/protocol/locks';
import type { Bytes32 } from '@trickle/protocol/types';
import { runTrickle, spawnTrickle } from './helpers/trickle-bin.js';

/**
 * A `trickle` command killed after its transaction left and before it was mined, then run again. The commands kept no
 * record of their transactions between runs, so the second run took the next nonce and queued behind the first copy
 * (two transactions for one intent; behind a copy priced below a fee spike, waiting for as long as the spike lasts, past
 * a deadline). The copy is now remembered in the CLI's state directory, and the account's next command replaces it.
 */
const RUNNER = 3;

describe('a trickle command killed mid-send', () => {
  let server: ChainServer;
  let dir: string;
  const rpc = (method: string, params: unknown[] = []) => server.provider.send(method, params);

  beforeAll(async () => {
    server = await startChainServer({ accounts: 4 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-cli-killed-send-'));
  });
  afterAll(async () => {
    await rpc('evm_setAutomine', [true]).catch(() => undefined);
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('leaves its copy remembered: the next run replaces it (one transaction, one nonce) instead of queueing behind it', async () => {
    const adj = await deployAdjudicator(server.wallet(0));
    writeFileSync(join(dir, 'key'), `${server.accounts[RUNNER]}\n`, { mode: 0o600 });
    const runner = server.addresses[RUNNER]!;
    const nonce = await server.provider.getTransactionCount(runner, 'latest');
    const env = { TRICKLE_STATE_DIR: join(dir, 'state') };
    const chain = { rpcUrl: server.url, adjudicator: adj.address };
    const preimage = `0x${randomBytes(32).toString('hex')}` as Bytes32;
    const args = ['reveal', preimage, '--key-file', join(dir, 'key'), '--json'];

    // Blocks are mined by hand from here: the first run's reveal waits in the mempool, and the run is killed.
    await rpc('evm_setAutomine', [false]);
    const first = spawnTrickle(args, chain, env);
    type PendingTx = { hash: string; nonce: string };
    const pending = async () =>
      ((await rpc('eth_getBlockByNumber', ['pending', true])) as { transactions: PendingTx[] }).transactions;
    const remembered = join(dir, 'state', 'stuck-copies', `${server.chainId}-${runner}.json`);
    while ((await pending()).length === 0 || !existsSync(remembered)) await new Promise((r) => setTimeout(r, 20));
    first.child.kill('SIGKILL');
    await first.exited;
    const [killed] = await pending();
    expect(Number(BigInt(killed!.nonce))).toBe(nonce);

    // Run again: its copy takes the killed one's nonce, so the mempool still holds one transaction of the runner.
    const second = runTrickle(args, chain, env);
    let copies: PendingTx[] = [];
    while (!(copies = await pending()).some((t) => t.hash !== killed!.hash)) {
      if (copies.length === 0) throw new Error('the killed copy left the mempool');
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(copies.map((t) => Number(BigInt(t.nonce)))).toEqual([nonce]);
    await rpc('evm_setAutomine', [true]);
    await rpc('evm_mine');
    const r = await second;
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ ok: true, hash: hashPreimage(preimage) });
    expect((await server.provider.getTransaction(r.json.tx))!.nonce).toBe(nonce);
    expect(await server.provider.getTransactionCount(runner, 'latest')).toBe(nonce + 1);
    expect(await new Adjudicator(adj.address, server.provider).revealedAt(hashPreimage(preimage))).toBeGreaterThan(0n);
  });
});
