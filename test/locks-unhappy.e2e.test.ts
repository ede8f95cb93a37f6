import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, balanceOf, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { hashPreimage } from '@trickle/protocol/locks';
import { isTrickleError } from '@trickle/protocol/errors';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import { TrickleClient, type LockGuardEvent } from '@trickle/client/client';
import { fileChannelStore, readChannelRecordFile } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import type { ConditionalPayment, ConditionalPaymentHandle } from '@trickle/client/channel';
import { freePort, startHubProcess, type HubProcess } from './helpers/hub-process.js';

/**
 * Conditional transfers when the hub misbehaves or vanishes, on a chain server process with the hub as its own process
 * (`trickle-hub`). Chain time moves by `evm_increaseTime` only; the devices' lock guards poll every 100 ms. Every
 * outcome is checked on-chain, to the base unit, after the channels are closed.
 */
const CHALLENGE = 10n;
const DEPOSIT = 1_000_000n;
const newKey = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;

/** Poll an async condition (chain reads) until it holds. */
async function until(cond: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('the hub vanishes (SIGKILL, not restarted) while holding B’s lock', () => {
  let server: ChainServer;
  let dir: string;
  let hub: HubProcess | undefined;
  const clients: TrickleClient[] = [];

  beforeAll(async () => {
    server = await startChainServer({ accounts: 4 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-locks-unhappy-'));
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.disconnect()));
    await hub?.kill();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('B reveals on-chain, force-closes and is paid; A’s lock is settled to the hub with the revealed preimage', async () => {
    const deployer = server.wallet(0);
    const adj = await deployAdjudicator(deployer);
    const usdt = await deployToken(deployer, 'usdt');
    for (const i of [1, 2, 3]) await mintTestToken(deployer, usdt.address, server.addresses[i]!, 10n ** 12n);
    const keyFile = join(dir, 'hub.key');
    writeFileSync(keyFile, `${server.accounts[1]}\n`, { mode: 0o600 });
    hub = await startHubProcess({
      rpc: server.url,
      adjudicator: adj.address,
      keyFile,
      store: join(dir, 'hub-store'),
      port: await freePort(),
    });
    const events: LockGuardEvent[] = [];
    const device = async (i: number) => {
      const c = await TrickleClient.connect({
        url: hub!.url,
        signer: nobleSigner(server.accounts[i]!),
        store: fileChannelStore(join(dir, `device-${i}`)),
        chain: adjudicatorClientChain({ wallet: server.wallet(i), chainId: server.chainId, adjudicator: adj.address }),
        reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
        lockGuard: { pollMs: 100, revealMarginSeconds: 30, onEvent: (e) => events.push(e) },
      });
      clients.push(c);
      return c;
    };
    const a = await device(2);
    const b = await device(3);
    const ach = await a.openChannel({ token: usdt.address, deposit: DEPOSIT, challengeDuration: CHALLENGE });
    const bch = await b.openChannel({ token: usdt.address, deposit: DEPOSIT, challengeDuration: CHALLENGE });
    const hubWallet = server.wallet(1);
    await approve(hubWallet, usdt.address, adj.address, DEPOSIT);
    await new Adjudicator(adj.address, hubWallet).deposit(bch.channelId, DEPOSIT);
    const wallet = (i: number) => balanceOf(server.provider, usdt.address, server.addresses[i] as Address);
    const [a0, b0, h0] = [await wallet(2), await wallet(3), await wallet(1)];

    const key = newKey();
    const hash = hashPreimage(key);
    let offered: ConditionalPayment | undefined;
    bch.onConditionalPayment((p) => (offered = p));
    // The hub process learns its deposit by polling the chain: HUB_LIQUIDITY until it has.
    let handle: ConditionalPaymentHandle | undefined;
    await until(async () => {
      handle = ach.pay(700n, { to: b.address, lock: { hash, expiresIn: 3_600 } });
      try {
        await handle.locked;
        return true;
      } catch (e) {
        if (isTrickleError(e, 'HUB_LIQUIDITY')) return false;
        throw e;
      }
    });
    await until(() => offered !== undefined && bch.locks.length === 1); // B holds the hub's lock, both signed
    const bLock = bch.locks[0]!;
    expect(bLock).toMatchObject({ amount: 700n, hash, payer: 'hub', expiry: offered!.expiresAt });

    await hub.kill('SIGKILL');
    hub = undefined;
    // B claims: the preimage is in B's record before the claim could leave; the hub never countersigns it.
    void offered!.claim(key).catch(() => undefined);
    const bFile = join(dir, 'device-3', `${bch.channelId}.channel`);
    await until(async () => (await readChannelRecordFile(bFile)).preimages?.[0]?.preimage === key);
    const reader = new Adjudicator(adj.address, server.provider);
    expect(await reader.revealedAt(hash)).toBe(0n);

    // Chain time to 20 s before B's lock expires (inside the 30 s margin): B's guard reveals the preimage.
    await server.increaseTime(bLock.expiry - 20n - (await server.latestTimestamp()));
    await until(async () => (await reader.revealedAt(hash)) !== 0n);
    const revealedAt = await reader.revealedAt(hash);
    expect(revealedAt).toBeLessThanOrEqual(bLock.expiry);
    expect(events).toContainEqual({ type: 'revealed', channelId: bch.channelId, hash, revealedAt });

    // Both devices close: the hub is gone, so each falls back to a force close with its lock list.
    const bClose = await b.close(bch.channelId, { timeoutMs: 300 });
    const aClose = await a.close(ach.channelId, { timeoutMs: 300 });
    expect([bClose.mode, aClose.mode]).toEqual(['force', 'force']);
    expect((await reader.getChannel(ach.channelId)).locksRoot).toBe(ach.latest.state.locksRoot);
    // Past both deadlines: each device's guard settles its channel with its locks.
    await server.increaseTime(CHALLENGE + 1n);
    const closed = async (id: ChannelId) => (await reader.getChannel(id)).status === 'closed';
    await until(async () => (await closed(bch.channelId)) && (await closed(ach.channelId)));
    expect(events.filter((e) => e.type === 'settled').map((e) => e.channelId)).toEqual(
      expect.arrayContaining([ach.channelId, bch.channelId]),
    );
    expect(events.filter((e) => e.type === 'failed')).toEqual([]);

    // B received the lock; A paid it; the hub paid B from its deposit and received A's lock: whole.
    expect((await wallet(3)) - b0).toBe(DEPOSIT + 700n);
    expect((await wallet(2)) - a0).toBe(DEPOSIT - 700n);
    expect((await wallet(1)) - h0).toBe(DEPOSIT - 700n + 700n);
  }, 120_000);
});
