import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Wallet, toQuantity, type JsonRpcApiProvider, type TransactionRequest, type TransactionResponse } from 'ethers';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { startLocalChain, type LocalChain } from '@trickle/devchain/localChain';
import type { Adjudicator } from '@trickle/chain/adjudicator';
import { deployAdjudicator } from '@trickle/chain/deploy';
import { adjudicatorInterface } from '@trickle/chain/events';
import type { ReplaceOptions, SentCopy } from '@trickle/chain/types';
import { channelContext, zeroState } from '@trickle/protocol/channel';
import { stateDigest } from '@trickle/protocol/eip712';
import { hashPreimage, lockCommitment, type Lock } from '@trickle/protocol/locks';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import {
  ETH_TOKEN,
  ZERO_ROOT,
  type Bytes32,
  type ChannelId,
  type SignedState,
  type State,
} from '@trickle/protocol/types';
import { openWatchDb, type WatchedChannel } from './db.js';
import { Responder } from './responder.js';

// The watchtower's reveal of a held preimage (a lock the hub pays the device) on the real dev chain, in an open
// channel with the reveal due at once: a preimage someone else revealed is not revealed again.
let chain: LocalChain;
let adj: Adjudicator;
let channelId: ChannelId;
beforeAll(async () => {
  chain = await startLocalChain({ accounts: 7 });
  adj = await deployAdjudicator(chain.wallet(0));
  const opened = await adj.connect(chain.wallet(1)).open(
    {
      chainId: chain.chainId,
      adjudicator: adj.address,
      device: chain.addresses[1]!,
      hub: chain.addresses[2]!,
      token: ETH_TOKEN,
      challengeDuration: 10n,
      salt: `0x${'01'.padStart(64, '0')}` as Bytes32,
    },
    100n,
  );
  channelId = opened.channelId;
});
afterAll(() => chain.close());
const responders: Responder[] = [];
afterEach(async () => {
  for (const r of responders.splice(0)) await r.stop();
});

const newKey = (): Bytes32 => `0x${randomBytes(32).toString('hex')}` as Bytes32;
/** A bystander (account 3) reveals. */
const bystanderReveals = (preimage: Bytes32) => adj.connect(chain.wallet(3)).reveal(preimage);

/** Held: an open channel's state with one lock the hub pays the device, and its preimage. */
async function held(preimage: Bytes32): Promise<WatchedChannel> {
  const now = BigInt((await chain.provider.getBlock('latest'))!.timestamp);
  const lock: Lock = { amount: 10n, hash: hashPreimage(preimage), expiry: now + 3_600n, payer: 'hub' };
  return {
    channelId,
    params: undefined as never, // not read by the responder
    latest: { state: { channelId, version: 1n } as never },
    receivedAt: Date.now(),
    source: 'api',
    locks: [lock],
    preimages: [{ hash: lock.hash, preimage }],
  };
}

function start(writer: Adjudicator, channel: WatchedChannel, replace?: ReplaceOptions, txTimeoutMs = 3_600_000) {
  const events: { event: string; [k: string]: unknown }[] = [];
  const r = new Responder({
    reader: adj.connect(chain.provider),
    writer,
    provider: chain.provider,
    held: (id) => (id === channel.channelId ? channel : undefined),
    log: (_level, event, fields) => events.push({ event, ...fields }),
    retryInitialMs: 3_600_000,
    retryMaxMs: 3_600_000,
    txTimeoutMs,
    recheckMs: 3_600_000,
    sweepMs: 3_600_000,
    revealMarginSeconds: 7_200, // due at once
    stopGraceMs: 10_000,
    maxConcurrentChecks: 1,
    replace,
  });
  responders.push(r);
  r.trigger(channel.channelId);
  const outcome = async () => {
    const done = ['preimage-revealed', 'preimage-revealed-already', 'reveal-failed'];
    while (!events.some((e) => done.includes(e.event))) await new Promise((res) => setTimeout(res, 10));
    return events.filter((e) => done.includes(e.event));
  };
  return { r, events, outcome };
}

describe('watchtower reveals', () => {
  it('a preimage someone else revealed is not revealed again: no transaction, reported', async () => {
    const key = newKey();
    const other = await bystanderReveals(key);
    const sender = chain.addresses[4]!;
    const nonce = await chain.provider.getTransactionCount(sender, 'latest');
    const { r, outcome } = start(adj.connect(chain.wallet(4)), await held(key));
    expect(await outcome()).toEqual([
      { event: 'preimage-revealed-already', channelId, hash: hashPreimage(key), revealedAt: other.revealedAt },
    ]);
    expect(r.view(channelId)).toMatchObject({ reveals: 0, failures: 0 });
    expect(await chain.provider.getTransactionCount(sender, 'pending')).toBe(nonce);
  });

  it('a reveal that fails while another party’s lands counts as done, not as a failure', async () => {
    const key = newKey();
    let revealedAt = 0n;
    /** Its send fails (a fee cap, say) while the bystander's reveal is mined. */
    class Outbid extends Wallet {
      override async sendTransaction(tx: TransactionRequest): Promise<TransactionResponse> {
        const [preimage] = adjudicatorInterface.parseTransaction({ data: String(tx.data) })!.args as unknown as [
          Bytes32,
        ];
        revealedAt = (await bystanderReveals(preimage)).revealedAt;
        throw new Error('the node refused the transaction');
      }
    }
    const { r, outcome } = start(adj.connect(new Outbid(chain.accounts[5]!, chain.provider)), await held(key));
    expect(await outcome()).toEqual([
      { event: 'preimage-revealed-already', channelId, hash: hashPreimage(key), revealedAt },
    ]);
    expect(revealedAt).toBeGreaterThan(0n);
    expect(r.view(channelId)).toMatchObject({ reveals: 0, failures: 0 });
  });
});

describe('watchtower transactions past txTimeoutMs', () => {
  it('a reveal that fails after its timeout is reported TIMEOUT, and its late failure logged, not dropped', async () => {
    const key = newKey();
    /** Its send fails 300 ms after the 100 ms timeout. */
    class Slow extends Wallet {
      override async sendTransaction(): Promise<TransactionResponse> {
        await new Promise((res) => setTimeout(res, 400));
        throw new Error('the node refused the transaction');
      }
    }
    const { events, outcome } = start(
      adj.connect(new Slow(chain.accounts[5]!, chain.provider)),
      await held(key),
      undefined,
      100,
    );
    expect(await outcome()).toMatchObject([{ event: 'reveal-failed', err: { code: 'TIMEOUT' } }]);
    expect(events.some((e) => e.event === 'tx-failed-late')).toBe(false);
    await expect.poll(() => events.find((e) => e.event === 'tx-failed-late')).toMatchObject({ err: expect.anything() });
  });
});

describe('watchtower replace-by-fee across a restart', () => {
  const rpc = (method: string, params: unknown[] = []) => chain.provider.send(method, params);
  /** A provider of its own on the same chain, as a new process has: nothing the last one remembered is in it. */
  const freshProvider = () =>
    new (chain.provider.constructor as new (eip1193: unknown, chainId: bigint) => JsonRpcApiProvider)(
      chain.eip1193,
      chain.chainId,
    );
  const dir = mkdtempSync(join(tmpdir(), 'trickle-watch-stuck-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a reveal given up at the fee cap leaves its copy in the database: the next run replaces it instead of colliding with it', async () => {
    const key = chain.accounts[6]!;
    const sender = chain.addresses[6]!;
    const nonce = await chain.provider.getTransactionCount(sender, 'latest');
    const fee = (await chain.provider.getFeeData()).maxFeePerGas!;
    const cap = (fee * 3n) / 2n;
    const path = join(dir, 'db');
    try {
      // First run: its reveal sticks under a fee spike and gives up at the cap.
      await rpc('evm_setAutomine', [false]);
      const first = openWatchDb(path);
      const p1 = freshProvider();
      const copies: SentCopy[] = [];
      const a = start(adj.connect(new Wallet(key, p1)), await held(newKey()), {
        everyBlocks: 2,
        everyMs: 3_600_000,
        pollMs: 5,
        maxFeePerGas: cap,
        onSend: (c) => copies.push(c),
        stuckCopies: first.stuckCopies,
      });
      while (copies.length < 1) await new Promise((res) => setTimeout(res, 10));
      await rpc('hardhat_setNextBlockBaseFeePerGas', [toQuantity(copies[0]!.maxFeePerGas * 4n)]);
      await rpc('evm_mine');
      await rpc('evm_mine');
      while (copies.length < 2) await new Promise((res) => setTimeout(res, 10));
      await rpc('evm_mine');
      await rpc('evm_mine');
      expect((await a.outcome()).map((e) => e.event)).toEqual(['reveal-failed']);
      await a.r.stop();
      await first.close();
      p1.destroy();

      // Second run on the same database, with a provider of its own.
      const second = openWatchDb(path);
      const p2 = freshProvider();
      const retry: SentCopy[] = [];
      const b = start(adj.connect(new Wallet(key, p2)), await held(newKey()), {
        everyMs: 3_600_000,
        pollMs: 5,
        maxFeePerGas: fee * 100n,
        onSend: (c) => retry.push(c),
        stuckCopies: second.stuckCopies,
      });
      while (retry.length < 1 && !b.events.some((e) => e.event === 'reveal-failed'))
        await new Promise((res) => setTimeout(res, 10));
      await rpc('evm_mine');
      // (without the stored copy: reveal-failed, the node refusing a replacement underpriced)
      expect((await b.outcome()).map((e) => e.event)).toEqual(['preimage-revealed']);
      expect(retry.map((c) => c.nonce)).toEqual([nonce]);
      expect(retry[0]!.maxFeePerGas * 8n).toBeGreaterThanOrEqual(cap * 9n);
      for (const c of copies) expect(await chain.provider.getTransactionReceipt(c.hash)).toBeNull();
      expect(await chain.provider.getTransactionCount(sender, 'latest')).toBe(nonce + 1);
      await b.r.stop();
      await second.close();
      p2.destroy();
    } finally {
      await rpc('evm_setAutomine', [true]);
    }
  });
});

describe('watchtower challenges beside reveals', () => {
  // A hub that routed locks to the device and never countersigned their claims, then force-closed with an old state:
  // the reveals of their preimages go out one at a time, each mined before the next, so the challenge must not wait
  // behind them (with hundreds of locks it would miss the deadline).
  it('a stale force close is challenged at once, not after the channel’s reveals, one block each', async () => {
    const params = {
      chainId: chain.chainId,
      adjudicator: adj.address,
      device: chain.addresses[1]!,
      hub: chain.addresses[2]!,
      token: ETH_TOKEN,
      challengeDuration: 600n,
      salt: `0x${'02'.padStart(64, '0')}` as Bytes32,
    };
    const { channelId: id } = await adj.connect(chain.wallet(1)).open(params, 1_000n);
    await adj.connect(chain.wallet(2)).deposit(id, 1_000n);
    const ctx = channelContext(params, { device: 1_000n, hub: 1_000n });
    const now = BigInt((await chain.provider.getBlock('latest'))!.timestamp);
    const keys = [newKey(), newKey(), newKey(), newKey()];
    const locks: Lock[] = keys.map((k) => ({ amount: 10n, hash: hashPreimage(k), expiry: now + 3_600n, payer: 'hub' }));
    const state: State = { ...zeroState(id), version: 3n, paidByDevice: 5n, ...lockCommitment(locks) };
    const digest = stateDigest(ctx.separator, state);
    const latest = {
      state,
      deviceSig: signatureToHex(nobleSigner(chain.accounts[1]!).signDigest(digest)),
      hubSig: signatureToHex(nobleSigner(chain.accounts[2]!).signDigest(digest)),
    } as SignedState;
    const none = `0x${'00'.repeat(32)}`;
    await (await adj.contract.connect(chain.wallet(2)).getFunction('forceClose')(zeroState(id), none, none)).wait();
    const channel: WatchedChannel = {
      channelId: id,
      params: undefined as never,
      latest,
      receivedAt: Date.now(),
      source: 'api',
      locks,
      preimages: keys.map((k) => ({ hash: hashPreimage(k), preimage: k })),
    };
    // A block every 400 ms from here: each reveal waits for one.
    await chain.provider.send('evm_setAutomine', [false]);
    await chain.provider.send('evm_setIntervalMining', [400]);
    try {
      const { events } = start(adj.connect(chain.wallet(6)), channel);
      await expect
        .poll(() => events.filter((e) => e.event === 'preimage-revealed').length, { timeout: 20_000 })
        .toBe(keys.length);
      await expect.poll(() => events.some((e) => e.event === 'challenge-mined'), { timeout: 10_000 }).toBe(true);
      const order = events.map((e) => e.event).filter((e) => e === 'challenge-mined' || e === 'preimage-revealed');
      // Mined with the first reveal or the one after it, not behind all four.
      expect(order.indexOf('challenge-mined')).toBeLessThanOrEqual(2);
      expect((await adj.getChannel(id)).version).toBe(3n);
    } finally {
      await chain.provider.send('evm_setIntervalMining', [0]);
      await chain.provider.send('evm_setAutomine', [true]);
    }
  });
});

describe('watchtower sweep of open channels', () => {
  afterEach(() => vi.useRealTimers());

  it('reads every channel again within its interval, spread over the interval rather than all at once', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: 1_000_000 });
    const POLL = 2_000;
    const SWEEP = 60_000;
    /** 2,000 channels with a one-hour period (a quarter: 15 min, so `SWEEP` applies), and one of 40 s (10 s). */
    const ids = Array.from({ length: 2_001 }, (_, i) => `0x${i.toString(16).padStart(64, '0')}` as ChannelId);
    const short = ids[0]!;
    const watched = (id: ChannelId): WatchedChannel => ({
      channelId: id,
      params: { challengeDuration: id === short ? 40n : 3_600n } as never,
      latest: { state: { channelId: id, version: 1n } as never },
      receivedAt: 0,
      source: 'store',
    });
    const reads: { id: ChannelId; at: number }[] = [];
    // Only the reads matter here: every channel reads open, with nothing to reveal.
    const reader = {
      getChannel: async (id: ChannelId) => {
        reads.push({ id, at: Date.now() });
        return { channelId: id, status: 'open', version: 0n, deadline: 0n, locksRoot: ZERO_ROOT };
      },
    } as unknown as Adjudicator;
    const r = new Responder({
      reader,
      writer: reader,
      provider: { getBlock: async () => ({ timestamp: 1_000 }) } as never,
      held: watched,
      log: () => undefined,
      retryInitialMs: 1_000,
      retryMaxMs: 1_000,
      txTimeoutMs: 1_000,
      recheckMs: 5_000,
      sweepMs: SWEEP,
      revealMarginSeconds: 60,
      stopGraceMs: 1_000,
      maxConcurrentChecks: 8,
    });
    responders.push(r);
    const settle = async () => {
      for (let i = 0; i < 20; i++) await new Promise((res) => setImmediate(res));
    };
    for (const id of ids) r.trigger(id); // the start-up pass
    while (reads.length < ids.length) await settle();
    const start = Date.now();
    reads.length = 0;
    const perTick: number[] = [];
    for (let t = POLL; t <= 3 * SWEEP; t += POLL) {
      vi.setSystemTime(start + t);
      const before = reads.length;
      r.tick();
      await settle();
      perTick.push(reads.length - before);
    }
    // A steady trickle: about channels x poll / interval per tick (67 here, and a tenth to spare), never a burst.
    expect(Math.max(...perTick)).toBeLessThanOrEqual(80);
    expect(perTick.slice(5).every((n) => n >= 67)).toBe(true);
    // Each channel is read within its interval, from the start-up pass on.
    for (const id of ids) {
      const times = [start, ...reads.filter((x) => x.id === id).map((x) => x.at), start + 3 * SWEEP];
      const gaps = times.slice(1).map((at, i) => at - times[i]!);
      expect(Math.max(...gaps), id).toBeLessThanOrEqual(id === short ? 10_000 : SWEEP);
    }
  });
});
