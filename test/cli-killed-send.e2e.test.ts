import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { decodeStuckCopies } from '@trickle/chain/types';
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
  type PendingTx = { hash: string; nonce: string };
  const pending = async () =>
    ((await rpc('eth_getBlockByNumber', ['pending', true])) as { transactions: PendingTx[] }).transactions;
  const reveal = (p: Bytes32) => ['reveal', p, '--key-file', join(dir, 'key'), '--json'];
  const preimage = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;

  /**
   * A fresh adjudicator, the runner's next nonce, and a state directory of its own (`name`): the environment and chain
   * options the commands run with, and the names of the stuck-copy files written there.
   */
  async function prepare(name: string) {
    const adj = await deployAdjudicator(server.wallet(0));
    const runner = server.addresses[RUNNER]!;
    const nonce = await server.provider.getTransactionCount(runner, 'latest');
    const remembered = join(dir, name, 'stuck-copies', `${server.chainId}-${runner}`);
    return {
      adj,
      runner,
      nonce,
      env: { TRICKLE_STATE_DIR: join(dir, name) },
      chain: { rpcUrl: server.url, adjudicator: adj.address },
      remembered,
      saved: () => (existsSync(remembered) ? readdirSync(remembered).filter((n) => n.endsWith('.json')) : []),
    };
  }

  beforeAll(async () => {
    server = await startChainServer({ accounts: 4 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-cli-killed-send-'));
    writeFileSync(join(dir, 'key'), `${server.accounts[RUNNER]}\n`, { mode: 0o600 });
  });
  afterAll(async () => {
    await rpc('evm_setAutomine', [true]).catch(() => undefined);
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('leaves its copy remembered: the next run replaces it (one transaction, one nonce) instead of queueing behind it', async () => {
    const { adj, runner, nonce, env, chain, saved } = await prepare('state');
    const secret = preimage();
    const args = reveal(secret);

    // Blocks are mined by hand from here: the first run's reveal waits in the mempool, and the run is killed.
    await rpc('evm_setAutomine', [false]);
    const first = spawnTrickle(args, chain, env);
    while ((await pending()).length === 0 || saved().length === 0) await new Promise((r) => setTimeout(r, 20));
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
    expect(r.json).toMatchObject({ ok: true, hash: hashPreimage(secret) });
    expect((await server.provider.getTransaction(r.json.tx))!.nonce).toBe(nonce);
    expect(await server.provider.getTransactionCount(runner, 'latest')).toBe(nonce + 1);
    expect(await new Adjudicator(adj.address, server.provider).revealedAt(hashPreimage(secret))).toBeGreaterThan(0n);
  });

  it("leaves another running command's copy alone: two commands from one account both get their transaction mined", async () => {
    const { adj, runner, nonce, env, chain, remembered, saved } = await prepare('state-two');
    const preimages = [preimage(), preimage()];

    await rpc('evm_setAutomine', [false]);
    // The first command's copy waits in the mempool, remembered on disk as the command's own.
    const first = runTrickle(reveal(preimages[0]!), chain, env);
    while ((await pending()).length === 0 || saved().length === 0) await new Promise((r) => setTimeout(r, 20));
    const [waiting] = await pending();
    // A second command from the same account, while the first still runs, takes the next nonce: it must not read the
    // first one's copy as stuck and replace it with its own call.
    const second = runTrickle(reveal(preimages[1]!), chain, env);
    let copies: PendingTx[] = [];
    while ((copies = await pending()).every((t) => t.hash === waiting!.hash)) {
      if (copies.length === 0) throw new Error("the first command's copy left the mempool");
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(copies.map((t) => Number(BigInt(t.nonce))).sort()).toEqual([nonce, nonce + 1]);
    expect(copies.map((t) => t.hash)).toContain(waiting!.hash);
    await rpc('evm_setAutomine', [true]);
    await rpc('evm_mine');
    const [r1, r2] = await Promise.all([first, second]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r1.json.tx).toBe(waiting!.hash);
    const reader = new Adjudicator(adj.address, server.provider);
    for (const p of preimages) expect(await reader.revealedAt(hashPreimage(p))).toBeGreaterThan(0n);
    // What is left remembered is mined (the next command skips it), each command's in its own file.
    const mined = await server.provider.getTransactionCount(runner, 'latest');
    expect(mined).toBe(nonce + 2);
    const left = saved().flatMap((n) => decodeStuckCopies(readFileSync(join(remembered, n), 'utf8')));
    expect(left.map((c) => c.nonce).sort()).toEqual([nonce, nonce + 1]);
  });
});
