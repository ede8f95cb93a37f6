import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPreimage } from '@trickle/protocol/locks';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { balanceOf } from '@trickle/chain/erc20';
import { fileChannelStore, readChannelRecordFile } from '@trickle/client/store';
import { createWatchtower } from '@trickle/cli/watch/watchtower';
import type { LockGuardEvent } from '@trickle/client/client';
import type { Bytes32, ChannelId } from '@trickle/protocol/types';
import type { Hub } from '@trickle/hub/hub';
import { createWorld, type World } from './helpers/harness.js';
import { leaveRunning, waitFor } from './helpers/wait.js';

/** These tests run locks of seconds (to see them expire): their devices take locks that short (`minLockSeconds`). */
const SHORT_LOCKS = { minLockSeconds: 0 };

/**
 * Red team: the hub's on-chain duties for hashlocked routes when its transactions fail for a while (its gas account
 * runs dry, its node refuses a transaction). A real EDR chain with the compiled adjudicator, a real hub over
 * WebSocket and real device clients. The hub's account is emptied with `hardhat_setBalance` and refilled once the hub
 * has logged the failures; nothing is timed: each test waits for the hub's own log lines before it acts.
 */
const newKey = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;
const state = (hub: Hub, id: ChannelId) => hub.channels.get(id)!.latest.state;
const locksOf = (hub: Hub, id: ChannelId) => hub.channels.get(id)!.locks ?? [];

/** A pino logger that keeps every line (as parsed JSON) in `lines`. */
/** Read the channel's registered version until it is `version` or `ms` have passed; the last version read. */
async function registeredVersion(w: World, id: ChannelId, version: bigint, ms = 60_000): Promise<bigint> {
  const reader = new Adjudicator(w.adjudicator, w.chain.provider);
  const end = Date.now() + ms;
  let registered = (await reader.getChannel(id)).version;
  while (registered !== version && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 200));
    registered = (await reader.getChannel(id)).version;
  }
  return registered;
}

function capture() {
  const lines: { msg?: string; [k: string]: unknown }[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  const count = (msg: string) => lines.filter((l) => l.msg === msg).length;
  return { lines, logger, count };
}

describe('red team: the hub’s on-chain answers for locks survive failed transactions', () => {
  let w: World;
  let hubAddress: string;
  /** The hub's gas account: emptied, then refilled. */
  const setHubEth = (wei: bigint) => w.chain.provider.send('hardhat_setBalance', [hubAddress, `0x${wei.toString(16)}`]);
  beforeAll(async () => {
    w = await createWorld({ accounts: 10, client: SHORT_LOCKS });
    hubAddress = w.chain.addresses[1]!;
  });
  afterAll(async () => {
    if (hubAddress) await setHubEth(10n ** 20n);
    await w?.close();
  });

  async function pair(a: number, b: number, challengeDuration: bigint) {
    const payer = await w.client(a);
    const payee = await w.client(b);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration });
    await w.hubDeposit(bch.channelId, 1_000_000n);
    return { payer, payee, ach, bch };
  }

  it('A force-closes with the state in which its lock was still pending while the hub cannot send a transaction: the hub challenges with its latest state once it can', async () => {
    const log = capture();
    const hub = await w.startHub({
      storePath: join(w.dir, 'hub-challenge'),
      limits: { lockMarginSeconds: 1 },
      more: { logger: log.logger },
    });
    const { payer, payee, ach, bch } = await pair(2, 3, 3600n);
    const key = newKey();
    bch.onConditionalPayment((p) => void p.claim(key));
    const handle = ach.pay(2_000n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 8_000 } });
    await handle.locked;
    // The state A cheats with: its lock toward the hub pending (the preimage, claimed off-chain, is on no chain).
    const old = structuredClone(ach.latest);
    const oldLocks = [...ach.locks];
    expect(old.state.lockedByDevice).toBe(2_000n);
    await waitFor(() => state(hub, ach.channelId).paidByDevice === 2_000n, 30_000); // the hub claimed from A
    await waitFor(() => ach.latest.state.paidByDevice === 2_000n, 30_000);
    // The hub claims from A as soon as B's claim is durable, while B's countersignature of its claim state is still on
    // its way back: B's channel on the hub is not ordered after A's.
    await waitFor(() => state(hub, bch.channelId).paidByHub === 2_000n, 30_000);
    expect(state(hub, bch.channelId).paidByHub).toBe(2_000n); // B was paid
    const latest = hub.channels.get(ach.channelId)!.latest;
    expect(locksOf(hub, ach.channelId)).toEqual([]);
    await payer.disconnect();

    await setHubEth(0n);
    const adjudicator = new Adjudicator(w.adjudicator, w.chain.wallet(2));
    await adjudicator.forceClose(old, { locks: oldLocks });
    await waitFor(() => log.count('challenge failed') >= 1, 30_000);
    await setHubEth(10n ** 20n);
    // Unanswered, settlement after the expiry would give A its 2,000 back though the hub paid B: the hub must retry.
    expect(await registeredVersion(w, ach.channelId, latest.state.version)).toBe(latest.state.version);
    await payee.disconnect();
    await hub.close();
    w.hub = undefined;
  }, 180_000);

  it('the hub stops after its challenge of a stale force close failed: restarted on its store, it reads the close again and challenges', async () => {
    const storePath = join(w.dir, 'hub-challenge-restart');
    const first = capture();
    let hub = await w.startHub({ storePath, limits: { lockMarginSeconds: 1 }, more: { logger: first.logger } });
    const payer = await w.client(2);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 3600n });
    await ach.pay(1_000n);
    const old = structuredClone(ach.latest);
    await ach.pay(5_000n);
    await waitFor(() => state(hub, ach.channelId).paidByDevice === 6_000n, 30_000);
    const latest = hub.channels.get(ach.channelId)!.latest;
    await payer.disconnect();

    await setHubEth(0n);
    const adjudicator = new Adjudicator(w.adjudicator, w.chain.wallet(2));
    await adjudicator.forceClose(old);
    await waitFor(() => first.count('challenge failed') >= 1, 30_000);
    await hub.close(); // the block of the force close is behind the hub's cursor now, unanswered
    w.hub = undefined;
    await setHubEth(10n ** 20n);
    const second = capture();
    hub = await w.startHub({ storePath, limits: { lockMarginSeconds: 1 }, more: { logger: second.logger } });
    expect(await registeredVersion(w, ach.channelId, latest.state.version)).toBe(latest.state.version);
    await hub.close();
    w.hub = undefined;
  }, 180_000);

  it('the hub’s reveal fails more than five times in a row before A’s expiry: it reveals once it can, in time, and A’s lock goes to the hub', async () => {
    const log = capture();
    const margin = 20;
    const hub = await w.startHub({
      storePath: join(w.dir, 'hub-reveal'),
      limits: { lockMarginSeconds: margin },
      more: { logger: log.logger },
    });
    const { payer, payee, ach, bch } = await pair(4, 5, 2n);
    const key = newKey();
    bch.onConditionalPayment((p) => void p.claim(key));
    // The lock expires by the chain's clock, which runs ahead of the wall clock on this busy EDR chain: leave room.
    const ahead = Number((await w.chain.provider.getBlock('latest'))!.timestamp) - Math.floor(Date.now() / 1000);
    const handle = ach.pay(2_000n, {
      to: payee.address,
      lock: { hash: hashPreimage(key), expiresIn: Math.max(ahead, 0) + 3 * margin + 10 },
    });
    await handle.locked;
    await payer.disconnect(); // A is gone before the hub can claim
    await waitFor(() => state(hub, bch.channelId).paidByHub === 2_000n, 30_000); // B was paid
    const lock = locksOf(hub, ach.channelId)[0]!;
    await setHubEth(0n);
    // Six failed attempts: the first and the five retries the hub allowed itself before this fix.
    await waitFor(() => log.count('revealing a preimage on-chain failed; retrying') >= 6, 120_000);
    await setHubEth(10n ** 20n);
    const adjudicator = new Adjudicator(w.adjudicator, w.chain.provider);
    let revealedAt = 0n;
    const giveUp = Date.now() + 90_000; // the chain's clock moves only with blocks: bound the wait by ours
    while (revealedAt === 0n && Date.now() < giveUp) {
      revealedAt = await adjudicator.revealedAt(lock.hash);
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(revealedAt).toBeGreaterThan(0n);
    expect(revealedAt).toBeLessThanOrEqual(lock.expiry);
    await payee.disconnect();
    await hub.close();
    w.hub = undefined;
  }, 240_000);
  it('the hub force-closes with a state from before a lock it then paid the device (a different lock set), the device offline: its watchtower challenges with the latest state and its lock, reveals the claimed preimage and settles it to the device', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-other-locks') });
    const b = await w.client(6, { lockGuard: false }); // only the watchtower acts for B
    const ch = await b.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 20n });
    await w.hubDeposit(ch.channelId, 1_000_000n);
    await hub.channels.credit(ch.channelId, 1_000n);
    await waitFor(() => ch.latest.state.paidByHub === 1_000n);
    const old = structuredClone(hub.channels.get(ch.channelId)!.latest); // no locks
    const key = newKey();
    const expiry = (await w.chain.latestTimestamp()) + 3_600n;
    await hub.channels.credit(ch.channelId, 400n, { lock: { hash: hashPreimage(key), expiry } });
    await waitFor(() => ch.locks.length === 1);
    const latest = structuredClone(ch.latest);
    await hub.close(); // the hub will not countersign B's claim
    w.hub = undefined;
    leaveRunning(ch.claim(hashPreimage(key), key), 'DISCONNECTED'); // never countersigned: the hub is gone
    const file = join(w.dir, 'device-6', `${ch.channelId}.channel`);
    const deadlineWait = Date.now() + 30_000;
    while ((await readChannelRecordFile(file)).preimages?.length !== 1) {
      if (Date.now() > deadlineWait) throw new Error('the claim was not stored');
      await new Promise((r) => setTimeout(r, 50));
    }
    await b.disconnect();
    const b0 = await balanceOf(w.chain.provider, w.token, w.chain.addresses[6]!);

    await new Adjudicator(w.adjudicator, w.chain.wallet(1)).forceClose(old);
    const tower = createWatchtower({
      provider: w.chain.provider,
      adjudicator: w.adjudicator,
      sender: w.chain.wallet(7),
      dbPath: join(w.dir, 'watch-other-locks'),
      storeDir: join(w.dir, 'device-6'),
      confirmations: 0,
      pollMs: 100,
      storePollMs: 100,
      recheckMs: 100,
      log: () => undefined,
    });
    await tower.start();
    try {
      const reader = new Adjudicator(w.adjudicator, w.chain.provider);
      const until = async (cond: () => Promise<boolean> | boolean) => {
        const end = Date.now() + 60_000;
        while (!(await cond())) {
          if (Date.now() > end) throw new Error('condition not met in time');
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      await until(async () => (await reader.getChannel(ch.channelId)).version === latest.state.version);
      await until(async () => (await reader.revealedAt(hashPreimage(key))) !== 0n);
      expect(await reader.revealedAt(hashPreimage(key))).toBeLessThanOrEqual(expiry);
      await w.chain.increaseTime(30); // past the deadline; the lock is decided (revealed in time)
      const view = () => tower.channels().find((c) => c.channelId === ch.channelId)?.dispute;
      await until(() => view()?.outcome === 'settled');
      expect((await reader.getChannel(ch.channelId)).status).toBe('closed');
      // B: its deposit, the credit and the lock the hub never countersigned.
      expect((await balanceOf(w.chain.provider, w.token, w.chain.addresses[6]!)) - b0).toBe(1_000_000n + 1_400n);
    } finally {
      await tower.stop();
    }
  }, 180_000);
  // The hub kept one pending conditional route per hash: anyone who learned an offer's hash could lock 1 base unit on
  // it toward a colluding device for up to maxLockSeconds (14 days), and every buyer of that offer was refused
  // (INVALID_ARGUMENT) until it expired. Routes are now keyed by (hash, payee), each claim matched to its own route
  // (locks.e2e 'several conditional routes on one hash' checks that the griefer's lock is not claimed).
  it('a griefer’s 1-unit lock on an offer’s hash toward its own second device does not block a buyer of that offer', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-grief'), limits: { lockMarginSeconds: 1 } });
    const griefers = await pair(2, 3, 2n);
    const trade = await pair(4, 5, 2n);
    const key = newKey();
    const hash = hashPreimage(key);
    trade.bch.onConditionalPayment((p) => void p.claim(key));
    await griefers.ach.pay(1n, { to: griefers.payee.address, lock: { hash, expiresIn: 13 * 24 * 3600 } }).locked;
    try {
      const bought = trade.ach.pay(1_000n, { to: trade.payee.address, lock: { hash, expiresIn: 3_600 } });
      expect(await bought.result).toEqual({ status: 'claimed', preimage: key });
    } finally {
      await Promise.all([griefers.payer, griefers.payee, trade.payer, trade.payee].map((c) => c.disconnect()));
      await hub.close();
      w.hub = undefined;
    }
  }, 120_000);
  // The device's guard read on-chain only channels whose latest state had pending locks, so a hub that force-closed
  // with the state from before the device's claim (the lock still pending in it, its preimage never on-chain) was not
  // answered by the device's own client; at settlement the unrevealed lock went back to the hub. It now also reads
  // every channel whose latest state has paidByHub > 0.
  it('an online device with a chain answers a hub force close with the state from before its claim landed', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-pre-claim') });
    const b = await w.client(8, { lockGuard: { pollMs: 100 } });
    const ch = await b.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 3600n });
    await w.hubDeposit(ch.channelId, 1_000_000n);
    const key = newKey();
    const expiry = (await w.chain.latestTimestamp()) + 600n;
    await hub.channels.credit(ch.channelId, 900n, { lock: { hash: hashPreimage(key), expiry } });
    await waitFor(() => ch.locks.length === 1);
    const old = structuredClone(hub.channels.get(ch.channelId)!.latest);
    const oldLocks = [...(hub.channels.get(ch.channelId)!.locks ?? [])];
    await ch.claim(hashPreimage(key), key);
    await waitFor(() => ch.latest.state.paidByHub === 900n && ch.locks.length === 0, 30_000);
    try {
      await new Adjudicator(w.adjudicator, w.chain.wallet(1)).forceClose(old, { locks: oldLocks });
      const want = ch.latest.state.version;
      expect(await registeredVersion(w, ch.channelId, want, 20_000)).toBe(want);
    } finally {
      await b.disconnect();
      await hub.close();
      w.hub = undefined;
    }
  }, 120_000);

  it('a running device challenges a hub force close of a lock-free channel with the state from before a routed payment to it, and settles it after the challenge period: the device is paid its credit', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-stale-credit') });
    const events: LockGuardEvent[] = [];
    const payer = await w.client(7, { lockGuard: false });
    const payee = await w.client(9, { lockGuard: { pollMs: 100, onEvent: (e) => void events.push(e) } });
    try {
      const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 3600n });
      const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 60n });
      await w.hubDeposit(bch.channelId, 1_000_000n);
      await ach.pay(100n, { to: payee.address });
      await waitFor(() => bch.latest.state.paidByHub === 100n && state(hub, bch.channelId).paidByHub === 100n);
      // The hub keeps the state from before the next routed payment, both signed and lock-free.
      const old = structuredClone(hub.channels.get(bch.channelId)!.latest);
      expect(old.state.paidByHub).toBe(100n);
      await ach.pay(2_000n, { to: payee.address });
      await waitFor(() => bch.latest.state.paidByHub === 2_100n, 30_000);
      const latest = bch.latest.state.version;
      expect(latest > old.state.version).toBe(true);
      expect(bch.locks).toEqual([]);

      const reader = new Adjudicator(w.adjudicator, w.chain.provider);
      await new Adjudicator(w.adjudicator, w.chain.wallet(1)).forceClose(old);
      await waitFor(() => events.some((e) => e.type === 'challenged' && e.channelId === bch.channelId), 30_000);
      expect(events.find((e) => e.type === 'challenged')).toMatchObject({ version: latest });
      expect(await reader.getChannel(bch.channelId)).toMatchObject({ status: 'closing', version: latest });
      await expect(bch.pay(1n)).rejects.toMatchObject({ code: 'CHANNEL_FINAL' }); // marked closing
      expect(events.filter((e) => e.type === 'failed')).toEqual([]);

      // After the challenge period the device's guard settles on its latest state: deposit + 2,100.
      const before = await balanceOf(w.chain.provider, w.token, payee.address);
      await w.chain.increaseTime(61);
      await waitFor(() => events.some((e) => e.type === 'settled' && e.channelId === bch.channelId), 30_000);
      expect((await reader.getChannel(bch.channelId)).status).toBe('closed');
      expect((await balanceOf(w.chain.provider, w.token, payee.address)) - before).toBe(1_000_000n + 2_100n);
      expect(events.filter((e) => e.type === 'challenged' || e.type === 'failed')).toHaveLength(1);
    } finally {
      await payer.disconnect();
      await payee.disconnect();
      await hub.close();
      w.hub = undefined;
    }
  }, 120_000);

  it('the wider watch leaves a cooperative close alone, does not challenge the device’s own force close with its latest state, and settles it after the deadline — after a restart of the client too', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-own-close') });
    const events: LockGuardEvent[] = [];
    const c = await w.client(6, {
      store: fileChannelStore(join(w.dir, 'device-own-close')), // none of this key's other channels
      lockGuard: { pollMs: 600_000, onEvent: (e) => void events.push(e) }, // passes run only when the test asks
      reconnect: { initialDelayMs: 50, maxDelayMs: 100, maxAttempts: 3 },
    });
    try {
      const coop = await c.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 60n });
      const own = await c.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 60n });
      for (const ch of [coop, own]) {
        await w.hubDeposit(ch.channelId, 1_000_000n);
        await hub.channels.credit(ch.channelId, 500n);
        await waitFor(() => ch.latest.state.paidByHub === 500n); // watched: an older state would lose the 500
      }
      expect((await c.close(coop.channelId)).mode).toBe('cooperative');
      await hub.close();
      w.hub = undefined;
      expect((await c.close(own.channelId, { timeoutMs: 500 })).mode).toBe('force');
      const reader = new Adjudicator(w.adjudicator, w.chain.provider);
      await c.guardLocks();
      expect(await reader.getChannel(own.channelId)).toMatchObject({
        status: 'closing',
        version: own.latest.state.version,
      });
      expect(events).toEqual([]); // nothing to challenge: the registration is the device's latest
      // The device restarts during the challenge period: the close is on record, so the new client settles it.
      await c.disconnect();
      const hub2 = await w.startHub({ storePath: join(w.dir, 'hub-own-close') });
      const again = await w.client(6, {
        store: fileChannelStore(join(w.dir, 'device-own-close')),
        lockGuard: { pollMs: 600_000, onEvent: (e) => void events.push(e) },
      });
      try {
        await w.chain.increaseTime(61);
        const before = await balanceOf(w.chain.provider, w.token, again.address);
        await again.guardLocks();
        expect(events.map((e) => e.type)).toEqual(['settled']);
        expect((await reader.getChannel(coop.channelId)).status).toBe('closed');
        expect((await reader.getChannel(own.channelId)).status).toBe('closed');
        expect((await balanceOf(w.chain.provider, w.token, again.address)) - before).toBe(1_000_000n + 500n);
        await again.guardLocks();
        expect(events).toHaveLength(1); // settled once
      } finally {
        await again.disconnect();
        await hub2.close();
      }
    } finally {
      await c.disconnect();
      await w.hub?.close();
      w.hub = undefined;
    }
  }, 120_000);
});
