/**
 * Model-based property: random sequences of opens, top-ups, off-chain payments, cooperative closes, force closes,
 * challenges, time travel and settles over several channels in ETH and a USDT-like token. After every step:
 * - the contract agrees with a simple model (status, registered version, payouts of every close; every refused
 *   operation is refused with the custom error the model predicts);
 * - per token, total deposited = total paid out + owed + what open/closing channels hold, and the adjudicator's
 *   balance equals the latter (conservation);
 * - a channel's registered version never decreases.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isChainRevert } from '@trickle/chain/errors';
import type { Address, ChannelId, ChannelParams, SignedState, State } from '@trickle/protocol/types';
import { CHALLENGE, createFixture, ETH, USDT, type Fixture } from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());

const SLOTS = 4; // even slots ETH, odd slots USDT-like
const UNIT = { eth: 10n ** 15n, usdt: USDT };

/**
 * `slot` names a channel slot. With `fit`, the operation goes to the first slot from there whose channel is in a
 * state where it can succeed (so sequences reach deep paths such as challenge → settle); without, to `slot` as is
 * (so refusals are exercised too).
 */
type Slotted = { slot: number; fit: boolean };
type Op =
  | ({ op: 'open'; byHub: boolean; amount: number } & Slotted)
  | ({ op: 'deposit'; byHub: boolean; amount: number } & Slotted)
  | ({ op: 'pay'; byDevice: boolean; amount: number } & Slotted)
  | ({ op: 'coopClose' } & Slotted)
  | ({ op: 'forceClose'; byHub: boolean; pick: 'zero' | 'latest' | number } & Slotted)
  | ({ op: 'challenge'; pick: 'latest' | number } & Slotted)
  | { op: 'wait' }
  | ({ op: 'settle' } & Slotted);

const slot = fc.integer({ min: 0, max: SLOTS - 1 });
const fit = fc.boolean();
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('open' as const),
      slot,
      fit,
      byHub: fc.boolean(),
      amount: fc.integer({ min: 1, max: 5 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('deposit' as const),
      slot,
      fit,
      byHub: fc.boolean(),
      amount: fc.integer({ min: 0, max: 5 }),
    }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('pay' as const),
      slot,
      fit,
      byDevice: fc.boolean(),
      amount: fc.integer({ min: 1, max: 2 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('coopClose' as const), slot, fit }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('forceClose' as const),
      slot,
      fit,
      byHub: fc.boolean(),
      pick: fc.oneof(
        { weight: 1, arbitrary: fc.constant('zero' as const) },
        { weight: 1, arbitrary: fc.constant('latest' as const) },
        { weight: 2, arbitrary: fc.double({ min: 0, max: 0.999, noNaN: true }) },
      ),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('challenge' as const),
      slot,
      fit,
      pick: fc.oneof(fc.constant('latest' as const), fc.double({ min: 0, max: 0.999, noNaN: true })),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ op: 'wait' as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('settle' as const), slot, fit }) },
);

/** Always run first: every refusal and the deep force close → challenge → settle path, in both tokens. */
const DEEP_PATH: Op[] = [0, 1].flatMap((slot): Op[] => [
  { op: 'open', slot, fit: false, byHub: false, amount: 5 },
  { op: 'open', slot, fit: false, byHub: true, amount: 1 },
  { op: 'deposit', slot, fit: false, byHub: true, amount: 3 },
  { op: 'deposit', slot, fit: false, byHub: true, amount: 0 },
  { op: 'pay', slot, fit: false, byDevice: true, amount: 2 },
  { op: 'pay', slot, fit: false, byDevice: false, amount: 1 },
  { op: 'forceClose', slot, fit: false, byHub: true, pick: 'zero' },
  { op: 'forceClose', slot, fit: false, byHub: false, pick: 'latest' },
  { op: 'settle', slot, fit: false },
  { op: 'challenge', slot, fit: false, pick: 0 },
  { op: 'pay', slot, fit: false, byDevice: true, amount: 1 },
  { op: 'challenge', slot, fit: false, pick: 'latest' },
  { op: 'challenge', slot, fit: false, pick: 0 },
  { op: 'wait' },
  { op: 'challenge', slot, fit: false, pick: 'latest' },
  { op: 'deposit', slot, fit: false, byHub: false, amount: 1 },
  { op: 'settle', slot, fit: false },
  { op: 'settle', slot, fit: false },
  { op: 'coopClose', slot, fit: false },
  { op: 'open', slot, fit: false, byHub: true, amount: 2 },
  { op: 'pay', slot, fit: false, byDevice: false, amount: 2 },
  { op: 'coopClose', slot, fit: false },
]);

interface ModelChannel {
  id: ChannelId;
  params: ChannelParams;
  token: Address;
  status: 'open' | 'closing' | 'closed';
  depositDevice: bigint;
  depositHub: bigint;
  states: SignedState[]; // states[i].state.version === i + 1
  registered: { version: bigint; payoutDevice: bigint } | undefined;
  expired: boolean;
  maxVersionSeen: bigint;
}

interface Model {
  slots: (ModelChannel | undefined)[];
  deposited: Map<Address, bigint>;
  paidOut: Map<Address, bigint>;
}

const add = (m: Map<Address, bigint>, k: Address, v: bigint) => m.set(k, (m.get(k) ?? 0n) + v);
const tokenOf = (s: number): Address => (s % 2 === 0 ? ETH : fx.usdt.address);
const unitOf = (s: number): bigint => (s % 2 === 0 ? UNIT.eth : UNIT.usdt);

function latestCounters(c: ModelChannel): { paidByDevice: bigint; paidByHub: bigint } {
  const last = c.states.at(-1)?.state;
  return { paidByDevice: last?.paidByDevice ?? 0n, paidByHub: last?.paidByHub ?? 0n };
}
function payoutDevice(c: ModelChannel, s: { paidByDevice: bigint; paidByHub: bigint }): bigint {
  return c.depositDevice - s.paidByDevice + s.paidByHub;
}

/** How often each kind of outcome happened over all runs (to check the sequences reach every path). */
const seen = new Map<string, number>();
const count = (k: string) => seen.set(k, (seen.get(k) ?? 0) + 1);

/** Run `p`, which the model says must be refused with `error`. */
async function refused(p: Promise<unknown>, error: string): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isChainRevert(e, error)) return error;
    throw e;
  }
  throw new Error(`expected ${error}, but the operation succeeded`);
}

/** The first slot from `o.slot` on whose channel `o` can succeed on, else `o.slot`. */
function fitSlot(m: Model, o: Exclude<Op, { op: 'wait' }>): number {
  const ok = (c: ModelChannel | undefined): boolean => {
    switch (o.op) {
      case 'open':
        return c === undefined || c.status === 'closed';
      case 'deposit':
      case 'forceClose':
        return c?.status === 'open';
      case 'pay':
      case 'coopClose':
        return c !== undefined && c.status !== 'closed';
      case 'challenge':
        return (
          c?.status === 'closing' &&
          !c.expired &&
          c.states.length > 0 &&
          c.states.at(-1)!.state.version > c.registered!.version
        );
      case 'settle':
        return c?.status === 'closing' && c.expired;
    }
  };
  for (let k = 0; k < SLOTS; k++) {
    const i = (o.slot + k) % SLOTS;
    if (ok(m.slots[i])) return i;
  }
  return o.slot;
}

/** Apply one operation to the chain and the model; returns the outcome (op name, refusal error, or 'skip'). */
async function step(m: Model, o: Op): Promise<string> {
  if (o.op === 'wait') {
    await fx.chain.increaseTime(CHALLENGE + 1n);
    for (const c of m.slots) if (c?.status === 'closing') c.expired = true;
    return o.op;
  }
  const i = o.fit ? fitSlot(m, o) : o.slot;
  const c = m.slots[i];
  const unit = unitOf(i);
  const adj = fx.adj;
  switch (o.op) {
    case 'open': {
      const opener = o.byHub ? fx.hub : fx.device;
      const amount = BigInt(o.amount) * unit;
      if (c !== undefined && c.status !== 'closed') {
        return refused(adj.connect(opener).open(c.params, amount), 'ChannelExists');
      }
      const params = fx.params(tokenOf(i));
      const r = await adj.connect(opener).open(params, amount);
      expect(r.channelId).not.toBe(c?.id);
      m.slots[i] = {
        id: r.channelId,
        params,
        token: params.token,
        status: 'open',
        depositDevice: o.byHub ? 0n : amount,
        depositHub: o.byHub ? amount : 0n,
        states: [],
        registered: undefined,
        expired: false,
        maxVersionSeen: 0n,
      };
      add(m.deposited, params.token, amount);
      return o.op;
    }
    case 'deposit': {
      if (c === undefined) return 'skip';
      const who = o.byHub ? fx.hub : fx.device;
      const amount = BigInt(o.amount) * unit;
      if (c.status !== 'open')
        return refused(adj.connect(who).deposit(c.id, amount, { token: c.token }), 'ChannelNotOpen');
      if (amount === 0n) return refused(adj.connect(who).deposit(c.id, amount, { token: c.token }), 'ZeroDeposit');
      const r = await adj.connect(who).deposit(c.id, amount, { token: c.token });
      expect(r.credited).toBe(amount);
      if (o.byHub) c.depositHub += amount;
      else c.depositDevice += amount;
      add(m.deposited, c.token, amount);
      return o.op;
    }
    case 'pay': {
      // Off-chain: the payer raises its counter if it can afford it; both sign the new state.
      if (c === undefined || c.status === 'closed') return 'skip';
      const { paidByDevice, paidByHub } = latestCounters(c);
      const amount = BigInt(o.amount) * unit;
      const affordable = (byDevice: boolean) => {
        const next = byDevice
          ? { paidByDevice: paidByDevice + amount, paidByHub }
          : { paidByDevice, paidByHub: paidByHub + amount };
        const pd = payoutDevice(c, next);
        return pd >= 0n && pd <= c.depositDevice + c.depositHub ? next : undefined;
      };
      // With `fit`, the side that can afford it pays.
      const next = affordable(o.byDevice) ?? (o.fit ? affordable(!o.byDevice) : undefined);
      if (next === undefined) return 'skip';
      const state: State = fx.state(c.id, {
        version: BigInt(c.states.length + 1),
        ...next,
        round: BigInt(c.states.length % 3),
      });
      c.states.push(fx.sign(state));
      return o.op;
    }
    case 'coopClose': {
      if (c === undefined) return 'skip';
      const final = fx.sign(
        fx.state(c.id, { version: BigInt(c.states.length + 1), ...latestCounters(c), isFinal: true }),
      );
      if (c.status === 'closed') return refused(adj.connect(fx.relayer).cooperativeClose(final), 'ChannelNotActive');
      const r = await adj.connect(fx.relayer).cooperativeClose(final);
      const pd = payoutDevice(c, final.state);
      expect([r.closed.devicePayout, r.closed.hubPayout]).toEqual([pd, c.depositDevice + c.depositHub - pd]);
      add(m.paidOut, c.token, r.closed.devicePayout + r.closed.hubPayout);
      c.status = 'closed';
      return o.op;
    }
    case 'forceClose': {
      if (c === undefined) return 'skip';
      const who = o.byHub ? fx.hub : fx.device;
      let signed: SignedState;
      if (o.pick === 'zero' || c.states.length === 0) signed = { state: fx.state(c.id) };
      else if (o.pick === 'latest') signed = c.states.at(-1)!;
      else signed = c.states[Math.floor(o.pick * c.states.length)]!;
      if (c.status !== 'open') return refused(adj.connect(who).forceClose(signed), 'ChannelNotOpen');
      const r = await adj.connect(who).forceClose(signed);
      expect(r.forceClosed.version).toBe(signed.state.version);
      c.status = 'closing';
      c.expired = false;
      c.registered = { version: signed.state.version, payoutDevice: payoutDevice(c, signed.state) };
      return o.op;
    }
    case 'challenge': {
      if (c === undefined || c.states.length === 0) return 'skip';
      const signed = o.pick === 'latest' ? c.states.at(-1)! : c.states[Math.floor(o.pick * c.states.length)]!;
      const tx = () => adj.connect(fx.relayer).challenge(signed);
      if (c.status !== 'closing') return refused(tx(), 'ChannelNotClosing');
      if (c.expired) return refused(tx(), 'ChallengePeriodOver');
      if (signed.state.version <= c.registered!.version) return refused(tx(), 'StaleVersion');
      await tx();
      c.registered = { version: signed.state.version, payoutDevice: payoutDevice(c, signed.state) };
      return o.op;
    }
    case 'settle': {
      if (c === undefined) return 'skip';
      const tx = () => adj.connect(fx.relayer).settle(c.id);
      if (c.status !== 'closing') return refused(tx(), 'ChannelNotClosing');
      if (!c.expired) return refused(tx(), 'ChallengePeriodNotOver');
      const r = await tx();
      const pd = c.registered!.payoutDevice;
      expect([r.closed.version, r.closed.devicePayout, r.closed.hubPayout]).toEqual([
        c.registered!.version,
        pd,
        c.depositDevice + c.depositHub - pd,
      ]);
      add(m.paidOut, c.token, r.closed.devicePayout + r.closed.hubPayout);
      c.status = 'closed';
      return o.op;
    }
  }
}

async function checkInvariants(m: Model): Promise<void> {
  const accounts = [fx.device.address, fx.hub.address] as Address[];
  await Promise.all(
    [ETH, fx.usdt.address].map(async (token) => {
      let locked = 0n;
      for (const c of m.slots)
        if (c !== undefined && c.token === token && c.status !== 'closed') locked += c.depositDevice + c.depositHub;
      const [balance, ...owed] = await Promise.all([
        fx.balance(token, fx.adj.address),
        ...accounts.map((a) => fx.adj.owed(token, a)),
      ]);
      const owedTotal = owed.reduce((a, b) => a + b, 0n);
      expect(balance).toBe(locked + owedTotal);
      expect(m.deposited.get(token) ?? 0n).toBe((m.paidOut.get(token) ?? 0n) + owedTotal + locked);
    }),
  );
  const live = m.slots.filter((c): c is ModelChannel => c !== undefined);
  const onChain = await Promise.all(live.map((c) => fx.adj.getChannel(c.id)));
  live.forEach((c, k) => {
    const ch = onChain[k]!;
    expect(ch.status).toBe(c.status);
    if (c.status === 'closing') {
      expect(ch.version).toBe(c.registered!.version);
      expect(ch.version >= c.maxVersionSeen).toBe(true);
      c.maxVersionSeen = ch.version;
      expect(ch.payoutDevice).toBe(c.registered!.payoutDevice);
    }
    if (c.status !== 'closed') expect([ch.depositDevice, ch.depositHub]).toEqual([c.depositDevice, c.depositHub]);
  });
}

describe('adjudicator properties', () => {
  it('conserves funds per token and never lowers a registered version, over random operation sequences', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 15, maxLength: 40 }), async (ops) => {
        await fx.reset();
        const model: Model = {
          slots: Array.from({ length: SLOTS }, () => undefined),
          deposited: new Map(),
          paidOut: new Map(),
        };
        for (const o of ops) {
          const outcome = await step(model, o);
          count(outcome === 'skip' ? `skip:${o.op}` : outcome);
          if (outcome !== 'skip') await checkInvariants(model); // a skipped step changed nothing
        }
      }),
      { numRuns: 40, examples: [[DEEP_PATH]] },
    );
    if (process.env['TRICKLE_PROPERTY_STATS'] !== undefined) console.log(Object.fromEntries(seen));
    // Every successful path was exercised (refusals are counted under their error names).
    const paths = ['open', 'deposit', 'pay', 'coopClose', 'forceClose', 'challenge', 'wait', 'settle'];
    const refusals = ['ChannelExists', 'ChannelNotOpen', 'ZeroDeposit', 'ChannelNotClosing', 'ChallengePeriodNotOver'];
    for (const k of [...paths, ...refusals, 'StaleVersion', 'ChallengePeriodOver', 'ChannelNotActive']) {
      expect(seen.get(k) ?? 0, k).toBeGreaterThan(0);
    }
  });
});
