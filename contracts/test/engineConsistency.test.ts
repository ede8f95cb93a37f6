/**
 * The channel engine against the real adjudicator: what two real engines (device and hub rules, secp256k1 keys, every
 * frame through the wire codec) sign is what the contract enforces.
 * - The engine's bound on pending locks is the adjudicator's `MAX_LOCKS`: an engine configured above it is refused,
 *   and a state the engines build with that many locks (both directions) force-closes and settles on-chain, paying
 *   exactly what `payouts` and `lockOutcome` predict; the engine refuses one lock more (`TOO_MANY_LOCKS`).
 * - Lock expiry: a preimage revealed in the block whose timestamp is the expiry claims the lock, one second later
 *   it does not — the engine's `lockOutcome` and the contract's settle agree at both edges.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { payouts } from '@trickle/protocol/channel';
import type { EngineChannel } from '@trickle/protocol/engine';
import { hashPreimage, lockOutcome, MAX_LOCKS_ON_CHAIN, type Lock } from '@trickle/protocol/locks';
import type { Bytes32, ChannelParams, Funding } from '@trickle/protocol/types';
import { Pair } from './engine-pair.js';
import { CHALLENGE, createFixture, deltas, ETH, ONE_ETH, type Fixture } from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

/** The engines of one channel of the fixture's adjudicator, each holding at most `maxLocks` pending locks. */
const newPair = (params: ChannelParams, funding: Funding, maxLocks: number): Pair =>
  new Pair(fx, { params, funding, restore: { config: { maxLocks } }, maxSteps: 500 });

const preimageOf = (n: number) => `0x${n.toString(16).padStart(64, '0')}` as Bytes32;

/** What settle pays each side for `locks` of the registered state, by the engine's rule. */
function predicted(
  state: EngineChannel['latest']['state'],
  funding: Funding,
  locks: readonly Lock[],
  revealedAt: ReadonlyMap<Bytes32, bigint>,
  now: bigint,
): { device: bigint; hub: bigint } {
  const p = payouts(state, funding);
  let device = p.device;
  let hub = p.hub;
  for (const l of locks) {
    const outcome = lockOutcome(l, revealedAt.get(l.hash), now);
    if (outcome === 'pending') throw new Error('a lock is still pending');
    const toDevice = (outcome === 'payee') === (l.payer === 'hub');
    if (toDevice) device += l.amount;
    else hub += l.amount;
  }
  return { device, hub };
}

describe('engine ↔ adjudicator', () => {
  it("the engine's lock bound is MAX_LOCKS: a state with that many locks settles as the engine predicts", async () => {
    const max = (await fx.adj.contract.getFunction('MAX_LOCKS').staticCall()) as bigint;
    expect(max).toBe(BigInt(MAX_LOCKS_ON_CHAIN));
    const funding = { device: 10n * ONE_ETH, hub: 10n * ONE_ETH };
    const { params } = await fx.open(ETH, funding.device, funding.hub);
    // Above the adjudicator's bound an engine is never built: its states could not be enforced.
    expect(() => newPair(params, funding, MAX_LOCKS_ON_CHAIN + 1)).toThrow(/maxLocks/);

    const p = newPair(params, funding, MAX_LOCKS_ON_CHAIN);
    const t0 = await fx.chain.latestTimestamp();
    p.nowSec = t0;
    const expiry = t0 + 3600n;
    const half = MAX_LOCKS_ON_CHAIN / 2;
    for (let i = 0; i < MAX_LOCKS_ON_CHAIN; i++) {
      const lock = { hash: hashPreimage(preimageOf(i + 1)), expiry: expiry + BigInt(i) };
      const amount = 1_000n + BigInt(i);
      if (i < half) p.apply('device', { type: 'pay', pays: [{ ref: i + 1, amount, lock }] });
      else p.apply('hub', { type: 'credit', ref: i + 1, amount, lock });
      p.flush();
    }
    expect(p.distinctCodes('device')).toEqual([]);
    expect(p.distinctCodes('hub')).toEqual([]);
    const latest = p.ch.device.latest;
    const locks = p.ch.device.locks;
    expect(locks).toHaveLength(MAX_LOCKS_ON_CHAIN);
    expect(p.ch.hub.latest).toEqual(latest);
    expect(p.ch.hub.locks).toEqual(locks);

    // One more is refused by the engine, whichever side adds it, and nothing is signed.
    const more = { hash: hashPreimage(preimageOf(999)), expiry };
    p.apply('device', { type: 'pay', pays: [{ ref: 900, amount: 1n, lock: more }] });
    p.apply('hub', { type: 'credit', ref: 901, amount: 1n, lock: more });
    p.flush();
    expect(p.distinctCodes('device')).toEqual(['TOO_MANY_LOCKS']);
    expect(p.distinctCodes('hub')).toEqual(['TOO_MANY_LOCKS']);
    expect(p.ch.device.latest).toEqual(latest);

    // Every fourth preimage is revealed on-chain before its expiry: those locks go to their payee.
    const revealedAt = new Map<Bytes32, bigint>();
    for (let i = 0; i < MAX_LOCKS_ON_CHAIN; i += 4) {
      const r = await fx.adj.connect(fx.relayer).reveal(preimageOf(i + 1));
      revealedAt.set(hashPreimage(preimageOf(i + 1)), r.revealedAt);
    }
    await fx.adj.connect(fx.hub).forceClose(latest, { locks });
    const last = locks.reduce((m, l) => (l.expiry > m ? l.expiry : m), 0n);
    await fx.chain.setNextBlockTimestamp(last + CHALLENGE + 1n);
    await fx.chain.mine();
    const now = (await fx.chain.latestTimestamp()) + 1n;
    await fx.chain.setNextBlockTimestamp(now);
    const want = predicted(latest.state, funding, locks, revealedAt, now);
    expect(want.device + want.hub).toBe(funding.device + funding.hub);
    const [d, h] = await deltas(fx, ETH, [fx.device.address, fx.hub.address], async () => {
      const r = await fx.adj.connect(fx.relayer).settle(latest.state.channelId, { locks });
      expect(r.closed).toMatchObject({ devicePayout: want.device, hubPayout: want.hub });
    });
    expect([d, h]).toEqual([want.device, want.hub]);
  });

  for (const [label, offset, outcome] of [
    ['at the expiry claims the lock', 0n, 'payee'],
    ['one second after it does not', 1n, 'payer'],
  ] as const)
    it(`a preimage revealed ${label}, on-chain as by the engine's lockOutcome`, async () => {
      const funding = { device: ONE_ETH, hub: ONE_ETH };
      const { params } = await fx.open(ETH, funding.device, funding.hub);
      const p = newPair(params, funding, 32);
      const t0 = await fx.chain.latestTimestamp();
      p.nowSec = t0;
      const lock = { hash: hashPreimage(preimageOf(7)), expiry: t0 + 600n };
      p.apply('device', { type: 'pay', pays: [{ ref: 1, amount: 1_000n, lock }] });
      p.flush();
      const latest = p.ch.device.latest;
      const locks = p.ch.device.locks;
      expect(locks).toHaveLength(1);
      await fx.adj.connect(fx.device).forceClose(latest, { locks });
      await fx.chain.setNextBlockTimestamp(lock.expiry + offset);
      const { revealedAt } = await fx.adj.connect(fx.relayer).reveal(preimageOf(7));
      expect(revealedAt).toBe(lock.expiry + offset);
      expect(lockOutcome(locks[0]!, revealedAt, lock.expiry + CHALLENGE)).toBe(outcome);
      await fx.chain.increaseTime(CHALLENGE + 1n);
      const now = (await fx.chain.latestTimestamp()) + 1n;
      await fx.chain.setNextBlockTimestamp(now);
      const want = predicted(latest.state, funding, locks, new Map([[lock.hash, revealedAt]]), now);
      const r = await fx.adj.connect(fx.relayer).settle(latest.state.channelId, { locks });
      expect(r.closed).toMatchObject({ devicePayout: want.device, hubPayout: want.hub });
      expect(want.hub).toBe(outcome === 'payee' ? ONE_ETH + 1_000n : ONE_ETH);
    });
});
