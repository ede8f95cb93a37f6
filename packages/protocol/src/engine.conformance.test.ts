/**
 * Conformance with protocol-spec §2 (transition rules, lock transitions) where a state breaks several rules: it is
 * refused with the code of the first one in the spec's order — the version and channel rules before anything a lock
 * carries, an add's expiry bound (`LIMIT_EXCEEDED`) last, a claim's preimage (`BAD_PREIMAGE`) before the lock is
 * looked up (`UNKNOWN_LOCK`) — and a different state at the latest version is `EQUIVOCATION` (kept as evidence)
 * whatever the receiver has in flight. A payee that refuses a lock's return with `LOCK_CLAIMED` shows its claim again
 * right behind the refusal, on either side.
 */
import { describe, expect, it } from 'vitest';
import { channelContext, checkLockTransition, signState, zeroState } from './channel.js';
import { stateDigest } from './eip712.js';
import {
  createEngineChannel,
  step,
  type EngineChannel,
  type EngineCrypto,
  type EngineEffect,
  type PeerUpdate,
  type StepResult,
} from './engine.js';
import { deviceRules } from './engine-device.js';
import { hubRules } from './engine-hub.js';
import { hashPreimage, lockCommitment, type Lock } from './locks.js';
import { nobleVerifier } from './signer.js';
import type { Bytes32, ChannelId, Role, State } from './types.js';
import type { Message } from './codec.js';
import { deviceKey, hubKey, params } from './engine.fixture.js';

const ctx = channelContext(params, { device: 1000n, hub: 1000n });
const keyOf = (role: Role) => (role === 'device' ? deviceKey : hubKey);
const crypto = (role: Role): EngineCrypto => ({
  digest: (s) => stateDigest(ctx.separator, s),
  sign: (d) => keyOf(role).signDigest(d),
  recover: (d, sig) => nobleVerifier.recoverAddress(d, sig),
});
const T0 = 1_800_000_000n; // seconds
const envAt = (role: Role, sec: bigint = T0) => ({ crypto: crypto(role), now: Number(sec) * 1000 });
const preimage = (n: number) => ('0x' + n.toString(16).padStart(64, '0')) as Bytes32;
const FAR = T0 + 10n ** 9n; // far beyond maxLockSeconds

/** A connected, synced channel whose latest state (both signed) is at `version` with `locks` pending. */
function channel(role: Role, version: bigint, locks: Lock[] = [], maxLocks?: number): EngineChannel {
  const s: State = { ...zeroState(ctx.channelId), version, paidByDevice: 10n, ...lockCommitment(locks) };
  const latest = signState(hubKey, ctx.separator, s, 'hub', signState(deviceKey, ctx.separator, s, 'device'));
  const ch = createEngineChannel(
    { role, ctx, latest, signedVersion: version, locks, needsSync: false, config: maxLocks ? { maxLocks } : undefined },
    role === 'hub' ? hubRules : deviceRules,
  );
  return step(ch, { type: 'connected' }, envAt(role)).channel;
}
const update = (state: State, by: Role, extra: Partial<PeerUpdate> = {}): PeerUpdate => ({
  id: 77,
  state,
  sig: keyOf(by).signDigest(stateDigest(ctx.separator, state)),
  ...extra,
});
const codes = (r: StepResult) => r.effects.flatMap((e) => (e.type === 'refused' ? [e.error.code] : []));
const sent = (r: StepResult): Message[] => r.effects.flatMap((e) => (e.type === 'send' ? [e.msg] : []));
const writes = (r: StepResult) =>
  r.effects.flatMap((e: EngineEffect) => (e.type === 'persist' ? e.writes.map((w) => w.kind) : []));
const peerUpdate = (ch: EngineChannel, u: PeerUpdate, sec?: bigint) =>
  step(ch, { type: 'peer-updates', updates: [u] }, envAt(ch.role, sec));
const wire = (l: Lock) => ({ amount: l.amount, hash: l.hash, expiry: l.expiry });

describe('§2 lock add: LIMIT_EXCEEDED is the last rule of an add', () => {
  const far: Lock = { amount: 5n, hash: hashPreimage(preimage(1)), expiry: FAR, payer: 'device' };

  it('a stale add is STALE_VERSION, one for another channel WRONG_CHANNEL, however far its lock expires', () => {
    const hub = channel('hub', 5n);
    const stale: State = { ...hub.latest.state, version: 3n, ...lockCommitment([far]) };
    expect(codes(peerUpdate(hub, update(stale, 'device', { lock: wire(far) })))).toEqual(['STALE_VERSION']);
    const other: State = { ...stale, version: 6n, channelId: ('0x' + 'ab'.repeat(32)) as ChannelId };
    expect(codes(peerUpdate(hub, update(other, 'device', { lock: wire(far) })))).toEqual(['WRONG_CHANNEL']);
  });

  it('an unaffordable add is INSUFFICIENT_FUNDS, one past maxLocks TOO_MANY_LOCKS, before its expiry bound', () => {
    const hub = channel('hub', 5n);
    const big: Lock = { ...far, amount: 5000n };
    const s: State = { ...hub.latest.state, version: 6n, ...lockCommitment([big]) };
    expect(codes(peerUpdate(hub, update(s, 'device', { lock: wire(big) })))).toEqual(['INSUFFICIENT_FUNDS']);
    const held: Lock = { amount: 1n, hash: hashPreimage(preimage(9)), expiry: T0 + 100n, payer: 'device' };
    const full = channel('hub', 5n, [held], 1);
    const s2: State = { ...full.latest.state, version: 6n, ...lockCommitment([held, far]) };
    expect(codes(peerUpdate(full, update(s2, 'device', { lock: wire(far) })))).toEqual(['TOO_MANY_LOCKS']);
  });

  it('checkLockTransition: maxExpiry after INSUFFICIENT_FUNDS; within the bound the add is taken', () => {
    const prev = channel('hub', 5n).latest.state;
    const f = { device: 100n, hub: 0n };
    const rules = { maxLocks: 32, maxExpiry: T0 + 100n };
    const big: Lock = { ...far, amount: 5000n };
    const run = (l: Lock) => () =>
      checkLockTransition(
        prev,
        [],
        { ...prev, version: 6n, ...lockCommitment([l]) },
        { kind: 'add', lock: l },
        f,
        'device',
        rules,
      );
    expect(run(big)).toThrow(expect.objectContaining({ code: 'INSUFFICIENT_FUNDS' }));
    expect(run({ ...far, amount: 1n })).toThrow(expect.objectContaining({ code: 'LIMIT_EXCEEDED' }));
    expect(run({ ...far, amount: 1n, expiry: T0 + 100n })()).toMatchObject({ lock: { expiry: T0 + 100n } });
  });
});

describe('§2 lock claim: version rules, then BAD_PREIMAGE, then UNKNOWN_LOCK', () => {
  const lock: Lock = { amount: 5n, hash: hashPreimage(preimage(1)), expiry: T0 + 100n, payer: 'device' };

  it('a stale claim update with a wrong preimage is STALE_VERSION', () => {
    const hub = channel('hub', 5n, [lock]);
    const s: State = { ...hub.latest.state, version: 3n, paidByDevice: 15n, ...lockCommitment([]) };
    const r = peerUpdate(hub, update(s, 'device', { unlock: { hash: lock.hash, preimage: preimage(2) } }));
    expect(codes(r)).toEqual(['STALE_VERSION']);
  });

  it('a claim update with a wrong preimage for no pending lock is BAD_PREIMAGE', () => {
    const hub = channel('hub', 5n);
    const s: State = { ...hub.latest.state, version: 6n, paidByDevice: 15n };
    const r = peerUpdate(hub, update(s, 'device', { unlock: { hash: lock.hash, preimage: preimage(2) } }));
    expect(codes(r)).toEqual(['BAD_PREIMAGE']);
  });

  it('a claim update that also names an escrow order is MALFORMED, nothing written (else the market refunds it)', () => {
    const hub = channel('hub', 5n, [lock]);
    const s: State = { ...hub.latest.state, version: 6n, paidByDevice: 15n, ...lockCommitment([]) };
    const claim = { unlock: { hash: lock.hash, preimage: preimage(1) } };
    const order = ('0x' + '07'.repeat(32)) as Bytes32;
    const r = peerUpdate(hub, update(s, 'device', { ...claim, escrowFor: order }));
    expect(codes(r)).toEqual(['MALFORMED']);
    expect(writes(r)).toEqual([]);
    expect(r.channel).toBe(hub);
    // The same claim alone is taken: the lock's amount is paid for its preimage, no escrow.
    const ok = peerUpdate(hub, update(s, 'device', claim));
    expect(codes(ok)).toEqual([]);
    expect(sent(ok)).toMatchObject([{ t: 'ack', version: 6n }]);
  });

  it('a claim frame with a wrong preimage for no pending lock is BAD_PREIMAGE, with a reject', () => {
    const hub = channel('hub', 5n);
    const r = step(hub, { type: 'peer-claim', id: 9, hash: lock.hash, preimage: preimage(2) }, envAt('hub'));
    expect(codes(r)).toEqual(['BAD_PREIMAGE']);
    expect(sent(r)).toMatchObject([{ t: 'reject', id: 9, code: 'BAD_PREIMAGE' }]);
  });
});

describe('§2 rule 2 before anything in flight, and final states in an update', () => {
  it('a device with a payment in flight refuses a different hub state at its latest version as EQUIVOCATION, kept', () => {
    let dev = channel('device', 5n);
    dev = step(dev, { type: 'pay', pays: [{ ref: 1, amount: 3n }] }, envAt('device')).channel;
    expect(dev.proposals).toHaveLength(1);
    const r = peerUpdate(dev, update({ ...dev.latest.state, paidByHub: 4n }, 'hub'));
    expect(codes(r)).toEqual(['EQUIVOCATION']);
    expect(writes(r)).toEqual(['evidence']);
    expect(sent(r)).toMatchObject([{ t: 'reject', code: 'EQUIVOCATION' }]);
  });

  for (const role of ['hub', 'device'] as const) {
    const mover = role === 'hub' ? 'device' : 'hub';
    it(`the ${role} refuses a stale final update STALE_VERSION and one that moves money BAD_FINAL`, () => {
      const ch = channel(role, 5n);
      const stale: State = { ...ch.latest.state, version: 3n, isFinal: true };
      expect(codes(peerUpdate(ch, update(stale, mover)))).toEqual(['STALE_VERSION']);
      const moves: State = {
        ...ch.latest.state,
        version: 6n,
        isFinal: true,
        ...(mover === 'device' ? { paidByDevice: 11n } : { paidByHub: 1n }),
      };
      expect(codes(peerUpdate(ch, update(moves, mover)))).toEqual(['BAD_FINAL']);
      // One that keeps every rule still comes in a close, not an update.
      expect(codes(peerUpdate(ch, update({ ...ch.latest.state, version: 6n, isFinal: true }, mover)))).toEqual([
        'MALFORMED',
      ]);
    });
  }
});

describe('§2 lock expire: the hub refuses a return whose preimage was revealed on-chain by the expiry', () => {
  it('LOCK_CLAIMED with revealedAt at or before the expiry, channel unchanged; taken with one after it, or none', () => {
    const lock: Lock = { amount: 5n, hash: hashPreimage(preimage(1)), expiry: T0 + 100n, payer: 'device' };
    const hub = channel('hub', 5n, [lock]);
    const s: State = { ...hub.latest.state, version: 6n, ...lockCommitment([]) };
    const back = (revealedAt?: bigint) =>
      peerUpdate(hub, update(s, 'device', { unlock: { hash: lock.hash }, revealedAt }), T0 + 101n);
    for (const at of [T0 + 100n, T0]) {
      const r = back(at);
      expect(codes(r)).toEqual(['LOCK_CLAIMED']);
      expect(r.channel).toBe(hub);
      expect(writes(r)).toEqual([]);
    }
    for (const at of [undefined, 0n, T0 + 101n]) expect(codes(back(at))).toEqual([]);
  });
});

describe('§2 lock expire: a payee refusing LOCK_CLAIMED shows its claim again right behind the refusal', () => {
  it('the device, payee of a hub lock it claimed before the expiry', () => {
    const lock: Lock = { amount: 5n, hash: hashPreimage(preimage(1)), expiry: T0 + 100n, payer: 'hub' };
    let dev = channel('device', 5n, [lock]);
    const c = step(dev, { type: 'claim', ref: 1, hash: lock.hash, preimage: preimage(1) }, envAt('device'));
    expect(sent(c)).toMatchObject([{ t: 'claim' }]);
    dev = c.channel;
    const s: State = { ...dev.latest.state, version: 6n, ...lockCommitment([]) };
    const r = peerUpdate(dev, update(s, 'hub', { id: 40, unlock: { hash: lock.hash } }), T0 + 101n);
    expect(codes(r)).toEqual(['LOCK_CLAIMED']);
    expect(sent(r)).toMatchObject([
      { t: 'reject', id: 40, code: 'LOCK_CLAIMED' },
      { t: 'claim', channelId: ctx.channelId, unlock: { hash: lock.hash, preimage: preimage(1) } },
    ]);
    expect(r.channel).toBe(dev);
  });
});
