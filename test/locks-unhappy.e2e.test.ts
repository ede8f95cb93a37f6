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
import { adjudicatorHubChain } from '@trickle/hub/chain-watcher';
import { createWatchtower, type Watchtower } from '@trickle/cli/watch/watchtower';
import { readmeRegion } from './helpers/readme-region.js';
import { createWorld, type World } from './helpers/harness.js';
import { freePort, startHubProcess, type HubProcess } from './helpers/hub-process.js';
import { leaveRunning, waitFor } from './helpers/wait.js';

/** These tests run locks of seconds (to see them expire): their devices take locks that short (`minLockSeconds`). */
const SHORT_LOCKS = { minLockSeconds: 0 };

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

describe('the hub vanishes (SIGKILL) while holding B’s lock', () => {
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

  /**
   * A fresh adjudicator, a hub process and devices A (2) and B (3) with their channels; A's routed lock of 700 toward
   * B is in both channels; then the hub is SIGKILLed, B claims (its record holds the preimage, the hub never
   * countersigns), and B's guard reveals the preimage on-chain within its margin before B's lock expires. With
   * `restartB`, B's client is gone before that and B's next one (same store) is connecting to the vanished hub,
   * without a timeout, when its guard has to reveal.
   */
  async function hubKilledAfterLocking(name: string, { restartB = false } = {}) {
    const deployer = server.wallet(0);
    const adj = await deployAdjudicator(deployer);
    const usdt = await deployToken(deployer, 'usdt');
    for (const i of [1, 2, 3]) await mintTestToken(deployer, usdt.address, server.addresses[i]!, 10n ** 12n);
    const keyFile = join(dir, 'hub.key');
    writeFileSync(keyFile, `${server.accounts[1]}\n`, { mode: 0o600 });
    const hubArgs = {
      rpc: server.url,
      adjudicator: adj.address,
      keyFile,
      store: join(dir, `${name}-hub-store`),
      port: await freePort(),
    };
    hub = await startHubProcess(hubArgs);
    const url = hub.url;
    const events: LockGuardEvent[] = [];
    const options = (i: number) => ({
      url,
      signer: nobleSigner(server.accounts[i]!),
      store: fileChannelStore(join(dir, `${name}-device-${i}`)),
      chain: adjudicatorClientChain({ wallet: server.wallet(i), chainId: server.chainId, adjudicator: adj.address }),
      reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
      lockGuard: { pollMs: 100, revealMarginSeconds: 30, onEvent: (e: LockGuardEvent) => events.push(e) },
    });
    const device = async (i: number) => {
      const c = await TrickleClient.connect(options(i));
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
    const before = { a: await wallet(2), b: await wallet(3), hub: await wallet(1) };

    const key = newKey();
    const hash = hashPreimage(key);
    let offered: ConditionalPayment | undefined;
    bch.onConditionalPayment((p) => (offered = p));
    // An hour from now by the chain's clock, which an earlier test may have moved ahead of the wall clock.
    const expiresIn = Math.max(0, Number(await server.latestTimestamp()) - Math.floor(Date.now() / 1000)) + 3_600;
    // The hub process learns its deposit by polling the chain: HUB_LIQUIDITY until it has.
    let handle: ConditionalPaymentHandle | undefined;
    await until(async () => {
      handle = ach.pay(700n, { to: b.address, lock: { hash, expiresIn } });
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
    leaveRunning(offered!.claim(key), 'DISCONNECTED'); // never countersigned: the hub is gone
    const bFile = join(dir, `${name}-device-3`, `${bch.channelId}.channel`);
    await until(async () => (await readChannelRecordFile(bFile)).preimages?.[0]?.preimage === key);
    const reader = new Adjudicator(adj.address, server.provider);
    expect(await reader.revealedAt(hash)).toBe(0n);
    let restarted: { connecting: Promise<TrickleClient>; abort: AbortController } | undefined;
    if (restartB) {
      // B's process goes, and its next one waits for the hub (no connectTimeoutMs) while the hub stays away.
      await b.disconnect();
      const abort = new AbortController();
      let retries = 0;
      const [deviceOptions, onRetry] = [options(3), () => retries++];
      // #region readme-guard-hub-away
      const connecting = TrickleClient.connect({
        ...deviceOptions, // url, signer, store, chain
        // Wait for the hub for as long as it stays away (down, or refusing this device): the lock guard runs
        // meanwhile, from the store; `signal` gives up (connect() then fails and its guard stops).
        connectTimeoutMs: Infinity,
        signal: abort.signal,
        onRetry,
      });
      // #endregion readme-guard-hub-away
      restarted = { connecting, abort };
      await until(() => retries > 0); // the hub refuses the socket (ECONNREFUSED): connect() is retrying
    }

    // Chain time to 20 s before B's lock expires (inside the 30 s margin): B's guard reveals the preimage.
    await server.increaseTime(bLock.expiry - 20n - (await server.latestTimestamp()));
    await until(async () => (await reader.revealedAt(hash)) !== 0n);
    const revealedAt = await reader.revealedAt(hash);
    expect(revealedAt).toBeLessThanOrEqual(bLock.expiry);
    // The guard reports once it has the transaction's receipt, which can be a moment after the chain shows it.
    await until(() => events.some((e) => e.type === 'revealed'));
    expect(events).toContainEqual({ type: 'revealed', channelId: bch.channelId, hash, revealedAt });
    const closed = async (id: ChannelId) => (await reader.getChannel(id)).status === 'closed';
    return {
      a,
      b,
      ach,
      bch,
      handle: handle!,
      key,
      hubArgs,
      events,
      wallet,
      before,
      reader,
      closed,
      restarted,
      options,
    };
  }

  it('not restarted: B reveals on-chain, force-closes and is paid; A’s lock is settled to the hub with the revealed preimage', async () => {
    const { a, b, ach, bch, events, wallet, before, reader, closed } = await hubKilledAfterLocking('gone');
    // Both devices close: the hub is gone, so each falls back to a force close with its lock list.
    const bClose = await b.close(bch.channelId, { timeoutMs: 300 });
    const aClose = await a.close(ach.channelId, { timeoutMs: 300 });
    expect([bClose.mode, aClose.mode]).toEqual(['force', 'force']);
    expect((await reader.getChannel(ach.channelId)).locksRoot).toBe(ach.latest.state.locksRoot);
    // Past both deadlines: each device's guard settles its channel with its locks.
    await server.increaseTime(CHALLENGE + 1n);
    const settled = () => events.filter((e) => e.type === 'settled').map((e) => e.channelId);
    await until(() => settled().includes(ach.channelId) && settled().includes(bch.channelId));
    expect((await closed(bch.channelId)) && (await closed(ach.channelId))).toBe(true);
    expect(events.filter((e) => e.type === 'failed')).toEqual([]);

    // B received the lock; A paid it; the hub paid B from its deposit and received A's lock: whole.
    expect((await wallet(3)) - before.b).toBe(DEPOSIT + 700n);
    expect((await wallet(2)) - before.a).toBe(DEPOSIT - 700n);
    expect((await wallet(1)) - before.hub).toBe(DEPOSIT - 700n + 700n);
  }, 120_000);

  it('back later: the hub learns the preimage B revealed on-chain and claims A’s lock off-chain; A pays exactly once', async () => {
    const { a, b, ach, bch, handle, key, hubArgs, wallet, before, closed } = await hubKilledAfterLocking('back');
    // B is paid on-chain: force close with its lock, settled by its guard after the challenge period.
    expect((await b.close(bch.channelId, { timeoutMs: 300 })).mode).toBe('force');
    await server.increaseTime(CHALLENGE + 1n);
    await until(() => closed(bch.channelId));
    expect((await wallet(3)) - before.b).toBe(DEPOSIT + 700n);

    // The hub comes back on its store, reads the reveal from the chain, and claims A's lock with it (A is online).
    hub = await startHubProcess(hubArgs);
    await expect(handle.result).resolves.toEqual({ status: 'claimed', preimage: key });
    expect(ach.latest.state).toMatchObject({ paidByDevice: 700n, lockedByDevice: 0n });
    // A closes cooperatively: its deposit less the payment; the hub got back from A what it paid B.
    expect((await a.close(ach.channelId)).mode).toBe('cooperative');
    expect((await wallet(2)) - before.a).toBe(DEPOSIT - 700n);
    expect((await wallet(1)) - before.hub).toBe(DEPOSIT - 700n + 700n);
  }, 120_000);

  it('B restarted while the hub is gone: its next client’s guard reveals the claim in its store in time while connect() waits for the hub; an aborted connect() stops it; back, the hub pays B', async () => {
    const { ach, bch, handle, key, hubArgs, events, restarted, options } = await hubKilledAfterLocking('restarted', {
      restartB: true,
    });
    // The reveal (checked above, by the expiry) was the next client's: the first one's guard stopped at disconnect().
    restarted!.abort.abort();
    await expect(restarted!.connecting).rejects.toMatchObject({ code: 'DISCONNECTED' });
    // Its guard stopped (nothing reports any more) and the store was given back: B's next client takes it.
    const reported = events.length;
    await new Promise((r) => setTimeout(r, 500));
    expect(events.length).toBe(reported);
    expect(events.filter((e) => e.type === 'failed')).toEqual([]);

    // The hub is back: B's next client shows its stored claim, and the hub pays it; A pays once.
    hub = await startHubProcess(hubArgs);
    const b = await TrickleClient.connect(options(3));
    clients.push(b);
    const again = b.channel(bch.channelId)!;
    await until(() => again.latest.state.paidByHub === 700n && again.locks.length === 0);
    await expect(handle.result).resolves.toEqual({ status: 'claimed', preimage: key });
    expect(ach.latest.state).toMatchObject({ paidByDevice: 700n, lockedByDevice: 0n });

    // packages/client/README.md shows the restarted client's connect() word for word.
    const { region, blocks } = readmeRegion(import.meta.url, 'readme-guard-hub-away', 6);
    expect(blocks).toContain(region);
  }, 120_000);
});

describe('the hub withholds the preimage from A', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4, client: SHORT_LOCKS });
  });
  afterAll(async () => w?.close());

  it('the hub paid B on B’s claim but never claims A’s lock: A is refunded at expiry, B keeps the payment', async () => {
    // Test hook, in this test only: a hub that learned the preimage from B and never claims A's lock with it, neither
    // off-chain (its channel table's claim() never settles) nor on-chain (its chain has no reveal).
    const chain = adjudicatorHubChain({
      provider: w.chain.provider,
      chainId: w.chain.chainId,
      adjudicator: w.adjudicator,
      runner: w.chain.wallet(1),
    });
    const hub = await w.startHub({
      storePath: join(w.dir, 'hub-withholds'),
      limits: { lockMarginSeconds: 1 },
      more: { chain: { ...chain, reveal: undefined } },
    });
    const withheld: Bytes32[] = [];
    hub.channels.claim = (_channelId, hash) => (withheld.push(hash), new Promise(() => {}));
    const a = await w.client(2);
    const b = await w.client(3);
    const ach = await a.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: 2n });
    const bch = await b.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: 2n });
    await w.hubDeposit(bch.channelId, DEPOSIT);
    const wallet = (i: number) => balanceOf(w.chain.provider, w.token, w.chain.addresses[i]!);
    const [a0, b0, h0] = [await wallet(2), await wallet(3), await wallet(1)];

    const key = newKey();
    bch.onConditionalPayment((p) => void p.claim(key));
    // Off-chain expiries are by the parties' clocks: the lock must outlive Δ (challenge 2 s + margin 1 s) and a margin.
    const handle = ach.pay(700n, { to: b.address, lock: { hash: hashPreimage(key), expiresIn: 6 } });
    await handle.locked;
    await waitFor(() => bch.latest.state.paidByHub === 700n && bch.locks.length === 0); // B's claim was countersigned
    expect(withheld).toEqual([hashPreimage(key)]);
    await expect(handle.result).resolves.toEqual({ status: 'refunded' });
    expect(ach.locks).toEqual([]);
    expect(ach.balance()).toMatchObject({ paid: 0n, settled: DEPOSIT });
    expect(await new Adjudicator(w.adjudicator, w.chain.provider).revealedAt(hashPreimage(key))).toBe(0n);

    // Both close cooperatively: A gets its whole deposit back, B its deposit and the payment; the hub is short by it.
    expect((await a.close(ach.channelId)).mode).toBe('cooperative');
    expect((await b.close(bch.channelId)).mode).toBe('cooperative');
    expect((await wallet(2)) - a0).toBe(DEPOSIT);
    expect((await wallet(3)) - b0).toBe(DEPOSIT + 700n);
    expect((await wallet(1)) - h0).toBe(DEPOSIT - 700n);
    await hub.close();
    w.hub = undefined;
  }, 60_000);
});

describe('an expiry race at ±1 s of the deadline, through the watchtower', () => {
  let w: World;
  let tower: Watchtower | undefined;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4, client: SHORT_LOCKS });
  });
  afterAll(async () => {
    await tower?.stop();
    await w?.close();
  });

  it('a reveal mined at the expiry pays B; one decided at the expiry but mined a second later refunds the hub', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-race') });
    // B's own guard is off: the watchtower, reading B's store directory, is the one that reveals and settles.
    const b = await w.client(2, { lockGuard: false });
    const ch1 = await b.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: CHALLENGE });
    const ch2 = await b.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: CHALLENGE });
    await w.hubDeposit(ch1.channelId, DEPOSIT);
    await w.hubDeposit(ch2.channelId, DEPOSIT);
    const wallet = (i: number) => balanceOf(w.chain.provider, w.token, w.chain.addresses[i]!);
    const [b0, h0] = [await wallet(2), await wallet(1)];
    const [k1, k2] = [newKey(), newKey()];
    const chainNow = await w.chain.latestTimestamp();
    const e1 = chainNow + 3_600n;
    const e2 = chainNow + 7_200n;
    await hub.channels.credit(ch1.channelId, 300n, { lock: { hash: hashPreimage(k1), expiry: e1 } });
    await hub.channels.credit(ch2.channelId, 500n, { lock: { hash: hashPreimage(k2), expiry: e2 } });
    await waitFor(() => ch1.locks.length === 1 && ch2.locks.length === 1);
    await hub.close(); // the hub vanishes before it countersigns any claim
    w.hub = undefined;
    leaveRunning(ch1.claim(hashPreimage(k1), k1), 'DISCONNECTED');
    leaveRunning(ch2.claim(hashPreimage(k2), k2), 'DISCONNECTED');
    const file = (id: ChannelId) => join(w.dir, 'device-2', `${id}.channel`);
    await until(async () => (await readChannelRecordFile(file(ch1.channelId))).preimages?.length === 1);
    await until(async () => (await readChannelRecordFile(file(ch2.channelId))).preimages?.length === 1);

    const towerDb = join(w.dir, 'watch-race');
    const startTower = async () => {
      tower = createWatchtower({
        provider: w.chain.provider,
        adjudicator: w.adjudicator,
        sender: w.chain.wallet(3),
        dbPath: towerDb,
        storeDir: join(w.dir, 'device-2'),
        confirmations: 0,
        pollMs: 100,
        storePollMs: 100,
        recheckMs: 100,
        revealMarginSeconds: 0,
        log: () => undefined,
      });
      await tower.start();
    };
    const reader = new Adjudicator(w.adjudicator, w.chain.provider);

    // Lock 1: B force-closes; the chain's clock stands a second before the expiry, and the watchtower's reveal is
    // mined exactly at it.
    expect((await b.close(ch1.channelId, { timeoutMs: 300 })).mode).toBe('force');
    await w.chain.setNextBlockTimestamp(e1 - 1n);
    await w.chain.mine();
    await w.chain.setNextBlockTimestamp(e1);
    await startTower();
    await until(async () => (await reader.revealedAt(hashPreimage(k1))) !== 0n);
    expect(await reader.revealedAt(hashPreimage(k1))).toBe(e1);
    // Its deadline is long past: the watchtower settles it with its lock list (lock 1 revealed in time: B's).
    const view1 = () => tower!.channels().find((c) => c.channelId === ch1.channelId)?.dispute;
    await until(() => view1()?.outcome === 'settled');
    expect((await reader.getChannel(ch1.channelId)).status).toBe('closed');
    expect(tower!.channels().find((c) => c.channelId === ch1.channelId)?.dispute).toMatchObject({
      outcome: 'settled',
      reveals: 1,
    });
    await tower!.stop();

    // Lock 2: the watchtower reads the chain's clock at the expiry itself (in time by its view), and its reveal is
    // mined one second later.
    expect((await b.close(ch2.channelId, { timeoutMs: 300 })).mode).toBe('force');
    await w.chain.setNextBlockTimestamp(e2);
    await w.chain.mine();
    await w.chain.setNextBlockTimestamp(e2 + 1n);
    await startTower();
    await until(async () => (await reader.revealedAt(hashPreimage(k2))) !== 0n);
    expect(await reader.revealedAt(hashPreimage(k2))).toBe(e2 + 1n);

    // Both deadlines have passed and both locks are decided: the watchtower settles lock 2's channel with its lock list
    // (lock 1's it settled before it stopped: this one sees it closed).
    const outcome = (id: ChannelId) => tower!.channels().find((c) => c.channelId === id)?.dispute?.outcome;
    await until(() => outcome(ch2.channelId) === 'settled' && outcome(ch1.channelId) === 'closed');
    expect((await reader.getChannel(ch2.channelId)).status).toBe('closed');
    expect(
      tower!
        .channels()
        .map((c) => [c.channelId, c.dispute?.outcome])
        .sort(),
    ).toEqual(
      [
        [ch1.channelId, 'closed'],
        [ch2.channelId, 'settled'],
      ].sort(),
    );
    // B: both deposits and lock 1; lock 2 went back to the hub.
    expect((await wallet(2)) - b0).toBe(2n * DEPOSIT + 300n);
    expect((await wallet(1)) - h0).toBe(2n * DEPOSIT - 300n);
  }, 120_000);
});

describe('a claim the hub never saw, across a restart of the device', () => {
  let w: World;
  let tower: Watchtower | undefined;
  beforeAll(async () => {
    w = await createWorld({ accounts: 5, client: SHORT_LOCKS });
  });
  afterAll(async () => {
    await tower?.stop();
    await w?.close();
  });

  it('B claims while offline and restarts before the expiry: the stored claim is shown again and B is paid', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-reclaim'), limits: { lockMarginSeconds: 1 } });
    const b = await w.client(2);
    const ch = await b.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: 2n });
    await w.hubDeposit(ch.channelId, DEPOSIT);
    const key = newKey();
    const expiry = BigInt(Math.floor(Date.now() / 1000)) + 3_600n;
    await hub.channels.credit(ch.channelId, 400n, { lock: { hash: hashPreimage(key), expiry } });
    await waitFor(() => ch.locks.length === 1);
    await b.disconnect();
    leaveRunning(ch.claim(hashPreimage(key), key), 'DISCONNECTED'); // offline: stored, not sent
    const file = join(w.dir, 'device-2', `${ch.channelId}.channel`);
    await until(async () => (await readChannelRecordFile(file)).preimages?.[0]?.preimage === key);
    expect(hub.channels.get(ch.channelId)!.latest.state).toMatchObject({ paidByHub: 0n, lockedByHub: 400n });

    const again = await w.client(2);
    await waitFor(() => hub.channels.get(ch.channelId)!.latest.state.paidByHub === 400n);
    await waitFor(() => again.channel(ch.channelId)!.latest.state.paidByHub === 400n);
    expect(again.channel(ch.channelId)!.locks).toEqual([]);
    // The claimed lock left the state: its preimage leaves the record with it.
    await until(async () => (await readChannelRecordFile(file)).preimages === undefined);
    await again.disconnect();
    await hub.close();
    w.hub = undefined;
  });

  it('B claims while offline, the watchtower reveals in time, B is back after the expiry: B refuses the lock’s return, the hub takes its claim (revealed in time) and B is paid off-chain', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-contested'), limits: { lockMarginSeconds: 1 } });
    const b = await w.client(3);
    const ch = await b.openChannel({ token: w.token, deposit: DEPOSIT, challengeDuration: 2n });
    await w.hubDeposit(ch.channelId, DEPOSIT);
    const wallet = (i: number) => balanceOf(w.chain.provider, w.token, w.chain.addresses[i]!);
    const [b0, h0] = [await wallet(3), await wallet(1)];
    const key = newKey();
    const hash = hashPreimage(key);
    // Off-chain, the hub takes its lock back only after the expiry by its own clock: a few seconds from now, and from
    // the chain's clock too (a development chain runs ahead of the wall clock after bursts of blocks).
    const wallNow = BigInt(Math.floor(Date.now() / 1000));
    const chainNow = await w.chain.latestTimestamp();
    const expiry = (chainNow > wallNow ? chainNow : wallNow) + 6n;
    await hub.channels.credit(ch.channelId, 900n, { lock: { hash, expiry } });
    await waitFor(() => ch.locks.length === 1);
    await b.disconnect();
    leaveRunning(ch.claim(hash, key), 'DISCONNECTED'); // offline: stored, never reaches the hub
    const file = join(w.dir, 'device-3', `${ch.channelId}.channel`);
    await until(async () => (await readChannelRecordFile(file)).preimages?.[0]?.preimage === key);

    // The watchtower reads B's store; by the chain's clock the lock is within its 5 s margin: it reveals.
    const reader = new Adjudicator(w.adjudicator, w.chain.provider);
    if ((await w.chain.latestTimestamp()) < expiry - 2n) {
      await w.chain.setNextBlockTimestamp(expiry - 2n);
      await w.chain.mine();
    }
    tower = createWatchtower({
      provider: w.chain.provider,
      adjudicator: w.adjudicator,
      sender: w.chain.wallet(4),
      dbPath: join(w.dir, 'watch-contested'),
      storeDir: join(w.dir, 'device-3'),
      confirmations: 0,
      pollMs: 100,
      storePollMs: 100,
      recheckMs: 100,
      revealMarginSeconds: 5,
      log: () => undefined,
    });
    await tower.start();
    await until(async () => (await reader.revealedAt(hash)) !== 0n);
    expect(await reader.revealedAt(hash)).toBeLessThanOrEqual(expiry);
    await tower.stop();
    tower = undefined;

    // B comes back after the expiry: it refuses the hub's return of the lock (LOCK_CLAIMED) and shows its claim again;
    // the hub finds the preimage on-chain by the expiry (settlement would give B the lock anyway) and takes the claim,
    // so the lock leaves the channel off-chain — before, it stayed pending on both sides until a force close.
    // By the wall clock, which the hub judges expiries by: the expiry may be well past 20 s away when the chain's clock
    // had run ahead (earlier cases of this file mine at set timestamps), so the wait is as long as the expiry needs.
    const pastExpiryMs = (Number(expiry) + 1) * 1000 - Date.now();
    await waitFor(() => Date.now() / 1000 > Number(expiry) + 1, Math.max(0, pastExpiryMs) + 5_000);
    const back = await w.client(3, { lockGuard: { pollMs: 100 } });
    await waitFor(() => (hub.channels.get(ch.channelId)!.locks ?? []).length === 0, 30_000);
    expect(hub.channels.get(ch.channelId)!.latest.state).toMatchObject({ paidByHub: 900n, lockedByHub: 0n });
    await waitFor(() => back.channel(ch.channelId)!.locks.length === 0, 30_000);
    expect(back.channel(ch.channelId)!.latest.state).toEqual(hub.channels.get(ch.channelId)!.latest.state);

    // B closes cooperatively with the lock paid to it.
    expect((await back.close(ch.channelId, { timeoutMs: 10_000 })).mode).toBe('cooperative');
    await until(async () => (await reader.getChannel(ch.channelId)).status === 'closed');
    expect((await wallet(3)) - b0).toBe(DEPOSIT + 900n);
    expect((await wallet(1)) - h0).toBe(DEPOSIT - 900n);
    await hub.close();
    w.hub = undefined;
  }, 60_000);
});
