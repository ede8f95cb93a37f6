/**
 * Hashlocks in the channel engine, with two real parties (secp256k1 keys, EIP-712 digests): adding, claiming and
 * expiring locks in both directions, the refusals (`BAD_PREIMAGE`, `UNKNOWN_LOCK`, `LOCK_EXPIRED`,
 * `LOCK_NOT_EXPIRED`, `TOO_MANY_LOCKS`, `INSUFFICIENT_FUNDS`), a restart that adopts the peer's lock list from a sync,
 * and a fast-check model (random adds, claims, expiries, crashes) checking conservation with locked amounts, that no
 * lock is claimed twice and none is both claimed and refunded.
 */
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { channelContext, checkLockTransition, payouts, zeroState } from './channel.js';
import { stateDigest } from './eip712.js';
import {
  createEngineChannel,
  step,
  type EngineChannel,
  type EngineCrypto,
  type EngineEffect,
  type EngineEvent,
  type EngineRestore,
  type StepResult,
} from './engine.js';
import { deviceRules } from './engine-device.js';
import { hubRules } from './engine-hub.js';
import type { ErrorCode } from './errors.js';
import { decodeLocks, hashPreimage, lockCommitment } from './locks.js';
import { nobleVerifier } from './signer.js';
import type { Bytes32, Funding, Role } from './types.js';
import type { Message } from './codec.js';
import { deviceKey, hubKey, params } from './engine.fixture.js';

/** A channel built with its role's rules, as a hub or device shell builds it. */
const createChannel = (r: EngineRestore): EngineChannel =>
  createEngineChannel(r, r.role === 'hub' ? hubRules : deviceRules);

const FUNDING: Funding = { device: 1_000_000n, hub: 1_000_000n };
const ctx = channelContext(params, FUNDING);
const crypto = (role: Role): EngineCrypto => ({
  digest: (s) => stateDigest(ctx.separator, s),
  sign: (d) => (role === 'device' ? deviceKey : hubKey).signDigest(d),
  recover: (d, sig) => nobleVerifier.recoverAddress(d, sig),
});
const CRYPTO = { device: crypto('device'), hub: crypto('hub') };
const preimageOf = (n: number) => ('0x' + n.toString(16).padStart(64, '0')) as Bytes32;
const T0 = 1_800_000_000; // seconds
const SEC = 1000;

/** Two engines joined by hand: every `send` of one is decoded into the other's event, as the shells do. */
class Pair {
  ch: Record<Role, EngineChannel>;
  /** What each side last made durable (restored from on a crash). */
  durable: Record<Role, EngineRestore>;
  now = T0 * SEC;
  effects: Record<Role, EngineEffect[]> = { device: [], hub: [] };
  inbox: Record<Role, Message[]> = { device: [], hub: [] };
  online = true;

  constructor(maxLocks?: number) {
    const config = maxLocks === undefined ? undefined : { maxLocks };
    const base = (role: Role): EngineRestore => ({
      role,
      ctx,
      latest: { state: zeroState(ctx.channelId) },
      signedVersion: 0n,
      needsSync: false,
      config,
    });
    this.durable = { device: base('device'), hub: base('hub') };
    this.ch = { device: createChannel(base('device')), hub: createChannel(base('hub')) };
    this.apply('device', { type: 'connected' });
    this.apply('hub', { type: 'connected' });
  }

  apply(role: Role, ev: EngineEvent): StepResult {
    const r = step(this.ch[role], ev, { crypto: CRYPTO[role], now: this.now });
    this.ch[role] = r.channel;
    if (r.effects.some((e) => e.type === 'persist')) {
      const c = r.channel;
      const out = role === 'hub' ? c.proposals[0] : undefined;
      this.durable[role] = {
        role,
        ctx: c.ctx,
        latest: c.latest,
        signedVersion: c.signedVersion,
        locks: c.locks,
        needsSync: true,
        config: this.durable[role].config,
        outgoing: out
          ? {
              state: out.state,
              sig: out.sig!,
              ref: -1,
              paymentId: out.credit?.paymentId,
              locks: out.locks,
              ...wire(out.op, out.preimage),
            }
          : undefined,
      };
    }
    for (const e of r.effects) {
      this.effects[role].push(e);
      if (e.type === 'send' && this.online) this.inbox[role === 'device' ? 'hub' : 'device'].push(e.msg);
    }
    return r;
  }

  /** Deliver messages both ways until quiet. */
  flush(limit = 200): void {
    for (let i = 0; i < limit; i++) {
      const role: Role | undefined =
        this.inbox.hub.length > 0 ? 'hub' : this.inbox.device.length > 0 ? 'device' : undefined;
      if (!role) return;
      const m = this.inbox[role].shift()!;
      const ev = toEvent(m);
      if (ev) this.apply(role, ev);
    }
    throw new Error('no quiescence');
  }

  /** A crash of one side: it restarts from what it made durable, then both resync. */
  crash(role: Role): void {
    this.inbox = { device: [], hub: [] };
    this.ch[role] = createChannel(this.durable[role]);
    const other: Role = role === 'device' ? 'hub' : 'device';
    this.apply(other, { type: 'disconnected' });
    this.apply('device', { type: 'connected' });
    this.apply('hub', { type: 'connected' });
    // The device asks, the hub answers with its latest and lock list.
    const d = this.ch.device;
    this.inbox.hub.push({ t: 'sync', id: 99, channelId: ctx.channelId, latest: d.latest });
    this.flush();
  }

  settled(role: Role): EngineEffect[] {
    return this.effects[role].filter((e) => e.type === 'lock-settled');
  }
}

function wire(op: EngineChannel['proposals'][number]['op'], preimage: Bytes32 | undefined) {
  if (!op) return {};
  if (op.kind === 'add') return { lock: { amount: op.lock.amount, hash: op.lock.hash, expiry: op.lock.expiry } };
  return { unlock: op.kind === 'claim' ? { hash: op.hash, preimage } : { hash: op.hash } };
}

function toEvent(m: Message): EngineEvent | undefined {
  switch (m.t) {
    case 'update':
      return {
        type: 'peer-updates',
        updates: [
          {
            id: m.id,
            state: m.state,
            sig: m.sig,
            route: m.route,
            paymentId: m.paymentId,
            lock: m.lock,
            unlock: m.unlock,
          },
        ],
      };
    case 'ack':
      return { type: 'peer-ack', id: m.id, version: m.version, sig: m.sig };
    case 'reject':
      return { type: 'peer-reject', id: m.id, code: m.code, message: m.message };
    case 'claim':
      return { type: 'peer-claim', id: m.id, hash: m.unlock.hash, preimage: m.unlock.preimage };
    case 'sync':
      return { type: 'peer-sync', id: m.id, latest: m.latest, locks: m.locks ? decodeLocks(m.locks) : undefined };
    default:
      return undefined;
  }
}

const refusedCodes = (r: StepResult): ErrorCode[] =>
  r.effects.flatMap((e) => (e.type === 'refused' || e.type === 'reject' ? [e.error.code] : []));

function payLock(p: Pair, ref: number, amount: bigint, n: number, expiresIn = 600): StepResult {
  const r = p.apply('device', {
    type: 'pay',
    pays: [{ ref, amount, lock: { hash: hashPreimage(preimageOf(n)), expiry: BigInt(T0 + expiresIn) } }],
  });
  p.flush();
  return r;
}

function hubLock(p: Pair, ref: number, amount: bigint, n: number, expiresIn = 600): void {
  p.apply('hub', {
    type: 'credit',
    ref,
    amount,
    lock: { hash: hashPreimage(preimageOf(n)), expiry: BigInt(T0 + expiresIn) },
  });
  p.flush();
}

describe('engine: locks the device pays', () => {
  it('a lock is added (payer signs first), then claimed with the preimage: the amount moves to paidByDevice', () => {
    const p = new Pair();
    payLock(p, 1, 700n, 1);
    const d = p.ch.device;
    expect(d.locks).toEqual([
      { amount: 700n, hash: hashPreimage(preimageOf(1)), expiry: BigInt(T0 + 600), payer: 'device' },
    ]);
    expect(d.latest.state.lockedByDevice).toBe(700n);
    expect(p.ch.hub.latest.state).toEqual(d.latest.state);
    expect(p.effects.device.find((e) => e.type === 'resolve' && e.ref === 1)).toMatchObject({
      locked: hashPreimage(preimageOf(1)),
    });
    // The hub, payee, shows the preimage; the device proposes the claim state; the hub countersigns.
    p.apply('hub', { type: 'claim', ref: 5, hash: hashPreimage(preimageOf(1)), preimage: preimageOf(1) });
    p.flush();
    expect(p.ch.device.latest.state).toMatchObject({ paidByDevice: 700n, lockedByDevice: 0n, paidByHub: 0n });
    expect(p.ch.device.locks).toEqual([]);
    expect(p.ch.hub.latest.state).toEqual(p.ch.device.latest.state);
    expect(p.settled('device')).toEqual([expect.objectContaining({ outcome: 'claimed', preimage: preimageOf(1) })]);
    expect(p.effects.device.some((e) => e.type === 'preimage' && e.preimage === preimageOf(1))).toBe(true);
    expect(p.effects.hub.find((e) => e.type === 'resolve' && e.ref === 5)).toBeDefined();
  });

  it('a wrong preimage, an unknown hash and a claim after expiry are refused and change nothing', () => {
    const p = new Pair();
    payLock(p, 1, 700n, 1, 10);
    const before = p.ch.device;
    const hash = hashPreimage(preimageOf(1));
    let r = p.apply('device', { type: 'peer-claim', id: 7, hash, preimage: preimageOf(2) });
    expect(refusedCodes(r)).toEqual(['BAD_PREIMAGE']);
    expect(r.channel).toBe(before);
    r = p.apply('device', { type: 'peer-claim', id: 8, hash: hashPreimage(preimageOf(3)), preimage: preimageOf(3) });
    expect(refusedCodes(r)).toEqual(['UNKNOWN_LOCK']);
    p.now = (T0 + 11) * SEC;
    r = p.apply('device', { type: 'peer-claim', id: 9, hash, preimage: preimageOf(1) });
    expect(refusedCodes(r)).toContain('LOCK_EXPIRED');
    expect(r.channel.latest).toBe(before.latest);
    // The payee side checks its own claim before sending it.
    p.now = T0 * SEC;
    expect(refusedCodes(p.apply('hub', { type: 'claim', ref: 1, hash, preimage: preimageOf(2) }))).toContain(
      'BAD_PREIMAGE',
    );
  });

  it("every code a payer refuses a claim with is listed in the spec's message table (the claim row)", () => {
    const readme = readFileSync(new URL('../../../protocol-spec/README.md', import.meta.url), 'utf8');
    const row = readme.split('\n').find((l) => l.startsWith('| `claim` |'))!;
    const listed = new Set([...row.matchAll(/`([A-Z][A-Z_]+)`/g)].map((m) => m[1]));
    const hash = hashPreimage(preimageOf(1));
    const refused = new Set<ErrorCode>();
    let p = new Pair();
    payLock(p, 1, 700n, 1, 10);
    for (const ev of [
      { type: 'peer-claim', id: 7, hash, preimage: preimageOf(2) },
      { type: 'peer-claim', id: 8, hash: hashPreimage(preimageOf(3)), preimage: preimageOf(3) },
    ] as const)
      for (const c of refusedCodes(p.apply('device', ev))) refused.add(c);
    p.now = (T0 + 11) * SEC;
    for (const c of refusedCodes(p.apply('device', { type: 'peer-claim', id: 9, hash, preimage: preimageOf(1) })))
      refused.add(c);
    p = new Pair();
    payLock(p, 1, 700n, 1, 10);
    p.ch.device = { ...p.ch.device, status: 'closing' };
    for (const c of refusedCodes(p.apply('device', { type: 'peer-claim', id: 10, hash, preimage: preimageOf(1) })))
      refused.add(c);
    expect(refused).toEqual(new Set(['BAD_PREIMAGE', 'UNKNOWN_LOCK', 'LOCK_EXPIRED', 'CHANNEL_NOT_OPEN']));
    for (const c of refused) expect(listed, 'the claim row of protocol-spec/README.md').toContain(c);
  });

  it('a claim after expiry is taken only when the shell read the preimage on-chain by the expiry', () => {
    const hash = hashPreimage(preimageOf(1));
    for (const [revealedAt, taken] of [
      [undefined, false],
      [0n, false],
      [BigInt(T0 + 11), false],
      [BigInt(T0 + 10), true],
    ] as const) {
      const p = new Pair();
      payLock(p, 1, 700n, 1, 10);
      const before = p.ch.device;
      p.now = (T0 + 60) * SEC;
      const r = p.apply('device', { type: 'peer-claim', id: 9, hash, preimage: preimageOf(1), revealedAt });
      if (!taken) {
        expect(refusedCodes(r)).toContain('LOCK_EXPIRED');
        expect(r.channel.latest).toBe(before.latest);
        continue;
      }
      expect(refusedCodes(r)).toEqual([]);
      p.flush();
      expect(p.ch.device.latest.state).toMatchObject({ paidByDevice: 700n, lockedByDevice: 0n });
      expect(p.ch.hub.latest.state).toEqual(p.ch.device.latest.state);
      expect(p.settled('device')).toEqual([expect.objectContaining({ outcome: 'claimed', preimage: preimageOf(1) })]);
    }
  });

  it('after expiry the device takes the lock back; the hub countersigns only past the expiry', () => {
    const p = new Pair();
    payLock(p, 1, 700n, 1, 10);
    // Too early: a hand-made expiry proposal is refused by the hub.
    const d = p.ch.device;
    const op = { kind: 'expire', hash: hashPreimage(preimageOf(1)) } as const;
    const early = { ...d.latest.state, version: d.latest.state.version + 1n, ...lockCommitment([]) };
    expect(() =>
      checkLockTransition(d.latest.state, d.locks, early, op, FUNDING, 'device', {
        maxLocks: 32,
        nowSec: BigInt(T0 + 10),
      }),
    ).toThrow(expect.objectContaining({ code: 'LOCK_NOT_EXPIRED' }));
    p.now = (T0 + 11) * SEC;
    p.apply('device', { type: 'tick' });
    p.flush();
    expect(p.ch.device.latest.state).toMatchObject({ paidByDevice: 0n, lockedByDevice: 0n });
    expect(p.ch.hub.latest.state).toEqual(p.ch.device.latest.state);
    expect(p.settled('device')).toEqual([expect.objectContaining({ outcome: 'refunded' })]);
    expect(p.settled('hub')).toEqual([expect.objectContaining({ outcome: 'refunded' })]);
  });

  it('deadlines to the second: a claim at the expiry is taken, one second later refused; an expiry is countersigned only after it', () => {
    const hash = hashPreimage(preimageOf(1));
    const at = (s: number) => (T0 + s) * SEC;
    // Claim exactly at the expiry (revealed at or before it): accepted.
    let p = new Pair();
    payLock(p, 1, 10n, 1, 10);
    p.now = at(10) + 999;
    p.apply('hub', { type: 'claim', ref: 2, hash, preimage: preimageOf(1) });
    p.flush();
    expect(p.ch.hub.latest.state.paidByDevice).toBe(10n);
    // One second later: refused by the payer, nothing moves.
    p = new Pair();
    payLock(p, 1, 10n, 1, 10);
    p.now = at(11);
    const r = p.apply('device', { type: 'peer-claim', id: 3, hash, preimage: preimageOf(1) });
    expect(refusedCodes(r)).toContain('LOCK_EXPIRED');
    // At the expiry the payer does not propose its expiry yet; one second after, it does and the hub countersigns.
    p = new Pair();
    payLock(p, 1, 10n, 1, 10);
    p.now = at(10) + 999;
    p.apply('device', { type: 'tick' });
    p.flush();
    expect(p.ch.hub.locks).toHaveLength(1);
    p.now = at(11);
    p.apply('device', { type: 'tick' });
    p.flush();
    expect(p.ch.hub.locks).toHaveLength(0);
    expect(p.ch.hub.latest.state.paidByDevice).toBe(0n);
  });

  it('a payee that showed the preimage in time refuses the lock’s return (LOCK_CLAIMED); the payer stops proposing it', () => {
    const p = new Pair();
    payLock(p, 1, 10n, 1, 10);
    const hash = hashPreimage(preimageOf(1));
    p.online = false; // the claim never reaches the device
    p.apply('hub', { type: 'claim', ref: 2, hash, preimage: preimageOf(1) });
    p.online = true;
    p.now = (T0 + 11) * SEC;
    p.apply('device', { type: 'tick' });
    p.flush();
    expect(p.effects.hub.some((e) => e.type === 'refused' && e.error.code === 'LOCK_CLAIMED')).toBe(true);
    expect(p.ch.hub.locks.map((l) => l.hash)).toEqual([hash]);
    expect(p.ch.device.contested).toEqual([hash]);
    const sent = p.effects.device.filter((e) => e.type === 'send').length;
    p.now += 5 * SEC;
    p.apply('device', { type: 'tick' });
    p.apply('device', { type: 'pay', pays: [{ ref: 3, amount: 1n }] });
    p.flush();
    const updates = p.effects.device.slice(0).filter((e) => e.type === 'send' && e.msg.t === 'update' && e.msg.unlock);
    expect(updates).toHaveLength(1); // the one refused expiry, never again
    expect(p.effects.device.filter((e) => e.type === 'send').length).toBeGreaterThan(sent); // the plain payment went
    expect(p.ch.hub.latest.state).toMatchObject({ paidByDevice: 1n, lockedByDevice: 10n });
  });

  it('counts locked amounts in affordability (INSUFFICIENT_FUNDS) and bounds pending locks (TOO_MANY_LOCKS)', () => {
    const p = new Pair(2);
    payLock(p, 1, 600_000n, 1);
    const r = payLock(p, 2, 500_000n, 2);
    expect(refusedCodes(r)).toEqual(['INSUFFICIENT_FUNDS']);
    // A plain payment is checked against the locked amount too.
    expect(refusedCodes(p.apply('device', { type: 'pay', pays: [{ ref: 3, amount: 400_001n }] }))).toEqual([
      'INSUFFICIENT_FUNDS',
    ]);
    payLock(p, 4, 1n, 4);
    expect(refusedCodes(payLock(p, 5, 1n, 5))).toEqual(['TOO_MANY_LOCKS']);
    expect(p.ch.device.locks).toHaveLength(2);
    expect(payouts(p.ch.hub.latest.state, FUNDING).device).toBe(1_000_000n - 600_001n);
  });
  it('two locks on one hash in one pay batch: the second is refused INVALID_ARGUMENT, the first alone is added (maxLocks counts the batch too)', () => {
    const p = new Pair(2);
    const lock = (n: number) => ({ hash: hashPreimage(preimageOf(n)), expiry: BigInt(T0 + 600) });
    const r = p.apply('device', {
      type: 'pay',
      pays: [
        { ref: 1, amount: 100n, lock: lock(1) },
        { ref: 2, amount: 200n, lock: lock(1) },
      ],
    });
    expect(refusedCodes(r)).toEqual(['INVALID_ARGUMENT']);
    expect(r.effects).toContainEqual(expect.objectContaining({ type: 'reject', ref: 2 }));
    p.flush();
    expect(p.ch.device.locks).toEqual([expect.objectContaining({ hash: lock(1).hash, amount: 100n })]);
    expect(p.ch.hub.locks).toEqual(p.ch.device.locks);
    expect(p.ch.device.queue).toEqual([]);
    expect(payouts(p.ch.hub.latest.state, FUNDING).device).toBe(1_000_000n - 100n);
    // Three new locks in one batch with room for one more: the third is refused, as it would be one call at a time.
    const r2 = p.apply('device', {
      type: 'pay',
      pays: [
        { ref: 3, amount: 1n, lock: lock(3) },
        { ref: 4, amount: 1n, lock: lock(4) },
      ],
    });
    expect(refusedCodes(r2)).toEqual(['TOO_MANY_LOCKS']);
    p.flush();
    expect(p.ch.hub.locks.map((l) => l.hash)).toEqual([lock(1).hash, lock(3).hash]);
  });
});

describe('engine: locks the hub pays', () => {
  it('the device countersigns the lock, claims it, and receives the amount', () => {
    const p = new Pair();
    hubLock(p, 1, 300n, 1);
    expect(p.effects.device.find((e) => e.type === 'lock-incoming')).toMatchObject({
      lock: { amount: 300n, payer: 'hub' },
    });
    expect(p.effects.hub.find((e) => e.type === 'resolve' && e.ref === 1)).toMatchObject({
      locked: hashPreimage(preimageOf(1)),
    });
    p.apply('device', { type: 'claim', ref: 2, hash: hashPreimage(preimageOf(1)), preimage: preimageOf(1) });
    p.flush();
    expect(p.ch.device.latest.state).toMatchObject({ paidByHub: 300n, lockedByHub: 0n });
    expect(p.effects.device.find((e) => e.type === 'incoming')).toMatchObject({ amount: 300n });
    expect(p.effects.device.find((e) => e.type === 'resolve' && e.ref === 2)).toBeDefined();
    // The hub made the preimage durable with the step that learned it.
    const hubPersist = p.effects.hub.find((e) => e.type === 'persist' && e.writes.some((w) => w.kind === 'preimage'));
    expect(hubPersist).toMatchObject({ gate: true });
  });

  it('a device restarted from its record adopts the hub’s lock list from the sync', () => {
    const p = new Pair();
    hubLock(p, 1, 300n, 1);
    payLock(p, 2, 100n, 2);
    // The device loses everything but its zero record: the sync's lock list lets it adopt the hub's state.
    p.durable.device = {
      role: 'device',
      ctx,
      latest: { state: zeroState(ctx.channelId) },
      signedVersion: 0n,
      needsSync: true,
    };
    p.crash('device');
    expect(p.ch.device.latest.state).toEqual(p.ch.hub.latest.state);
    expect(p.ch.device.locks).toEqual(p.ch.hub.locks);
    expect(p.ch.device.locks.map((l) => l.payer)).toEqual(['hub', 'device']);
  });
});

describe('engine: a payee gives a lock back before its expiry (cancel)', () => {
  const hashOf = (n: number) => hashPreimage(preimageOf(n));
  /** The code its caller `ref` was refused with (every refused intent answers its caller). */
  const callerRefusal = (r: StepResult, ref: number): ErrorCode | undefined =>
    r.effects.flatMap((e) => (e.type === 'reject' && e.ref === ref ? [e.error.code] : []))[0];

  it('the hub gives back a lock the device pays: the lock leaves both lists, no counter moves, the payer sees it refunded', () => {
    const p = new Pair();
    payLock(p, 1, 700n, 1);
    const before = p.ch.device.latest.state;
    p.apply('hub', { type: 'give-back', ref: 5, hash: hashOf(1) });
    p.flush();
    for (const role of ['device', 'hub'] as const) {
      expect(p.ch[role].locks).toEqual([]);
      expect(p.ch[role].latest.state).toMatchObject({
        version: before.version + 1n,
        paidByDevice: before.paidByDevice,
        paidByHub: before.paidByHub,
        lockedByDevice: 0n,
      });
      expect(p.settled(role)).toEqual([
        expect.objectContaining({ outcome: 'refunded', lock: expect.objectContaining({ payer: 'device' }) }),
      ]);
    }
    expect(p.ch.device.latest.hubSig).toBeDefined();
    expect(p.ch.device.latest.deviceSig).toBeDefined();
    expect(p.effects.hub.find((e) => e.type === 'resolve' && e.ref === 5)).toBeDefined();
    // Nothing left to expire: time passing proposes nothing more.
    const v = p.ch.device.latest.state.version;
    p.now += 700 * SEC;
    p.apply('device', { type: 'tick' });
    p.flush();
    expect(p.ch.device.latest.state.version).toBe(v);
  });

  it('the device gives back a lock the hub pays; its caller is answered once the hub countersigned', () => {
    const p = new Pair();
    hubLock(p, 1, 300n, 1);
    p.apply('device', { type: 'give-back', ref: 9, hash: hashOf(1) });
    p.flush();
    expect(p.ch.hub.locks).toEqual([]);
    expect(p.ch.device.latest.state).toMatchObject({ paidByHub: 0n, lockedByHub: 0n });
    expect(p.ch.hub.latest.state).toEqual(p.ch.device.latest.state);
    expect(p.effects.device.find((e) => e.type === 'resolve' && e.ref === 9)).toBeDefined();
    expect(p.settled('hub')).toEqual([expect.objectContaining({ outcome: 'refunded' })]);
  });

  it('refused, channel unchanged: a lock of its own (UNKNOWN_LOCK), one whose preimage it showed (LOCK_CLAIMED), twice, or claimed once given back (INVALID_ARGUMENT)', () => {
    const p = new Pair();
    payLock(p, 1, 700n, 1);
    hubLock(p, 2, 300n, 2);
    let before = p.ch.device;
    let r = p.apply('device', { type: 'give-back', ref: 3, hash: hashOf(1) });
    expect(callerRefusal(r, 3)).toBe('UNKNOWN_LOCK');
    expect(r.channel).toBe(before);
    p.online = false; // the claim is not answered yet
    p.apply('device', { type: 'claim', ref: 4, hash: hashOf(2), preimage: preimageOf(2) });
    before = p.ch.device;
    r = p.apply('device', { type: 'give-back', ref: 5, hash: hashOf(2) });
    expect(callerRefusal(r, 5)).toBe('LOCK_CLAIMED');
    expect(r.channel).toBe(before);
    p.apply('hub', { type: 'give-back', ref: 6, hash: hashOf(1) });
    before = p.ch.hub;
    r = p.apply('hub', { type: 'give-back', ref: 7, hash: hashOf(1) });
    expect(callerRefusal(r, 7)).toBe('INVALID_ARGUMENT');
    expect(r.channel).toBe(before);
    r = p.apply('hub', { type: 'claim', ref: 8, hash: hashOf(1), preimage: preimageOf(1) });
    expect(callerRefusal(r, 8)).toBe('INVALID_ARGUMENT'); // no claim of a lock being given back
    expect(r.channel).toBe(before);
  });

  it('a payer returning its own lock before the expiry is still refused LOCK_NOT_EXPIRED: an unlock without a preimage is a cancel only from the payee', () => {
    const p = new Pair();
    hubLock(p, 1, 300n, 1);
    const hub = p.ch.hub;
    const base = hub.latest.state;
    const state = { ...base, version: base.version + 1n, ...lockCommitment([]) };
    const sig = hubKey.signDigest(stateDigest(ctx.separator, state));
    const r = p.apply('device', {
      type: 'peer-updates',
      updates: [{ id: 40, state, sig, unlock: { hash: hashOf(1) } }],
    });
    expect(refusedCodes(r)).toEqual(['LOCK_NOT_EXPIRED']);
    expect(p.ch.device.locks).toHaveLength(1);
    // A cancel checks the lock's payer: the hub's own lock is no cancel for the hub (WRONG_PAYER).
    expect(() =>
      checkLockTransition(base, hub.locks, state, { kind: 'cancel', hash: hashOf(1) }, FUNDING, 'hub', { maxLocks: 4 }),
    ).toThrow(expect.objectContaining({ code: 'WRONG_PAYER' }));
  });

  it('a hub restarted with its give-back proposed and unanswered proposes the same cancel again', () => {
    const p = new Pair();
    payLock(p, 1, 700n, 1);
    p.online = false;
    p.apply('hub', { type: 'give-back', ref: 5, hash: hashOf(1) });
    expect(p.durable.hub.outgoing?.unlock).toEqual({ hash: hashOf(1) });
    p.online = true;
    p.crash('hub');
    p.flush();
    expect(p.ch.device.locks).toEqual([]);
    expect(p.ch.hub.latest.state).toEqual(p.ch.device.latest.state);
    expect(p.settled('device')).toEqual([expect.objectContaining({ outcome: 'refunded' })]);
  });
});

describe('engine: a model of the lock rules (random adds, claims, expiries, crashes)', () => {
  type Cmd =
    | { k: 'add'; who: Role; amount: bigint; n: number; ttl: number }
    | { k: 'claim'; n: number; wrong: boolean }
    | { k: 'give'; n: number }
    | { k: 'time'; s: number }
    | { k: 'crash'; who: Role }
    | { k: 'pay'; amount: bigint };
  const cmd: fc.Arbitrary<Cmd> = fc.oneof(
    fc.record({
      k: fc.constant('add' as const),
      who: fc.constantFrom<Role>('device', 'hub'),
      amount: fc.bigInt(1n, 300_000n),
      n: fc.integer({ min: 1, max: 4 }),
      ttl: fc.integer({ min: 1, max: 30 }),
    }),
    fc.record({ k: fc.constant('claim' as const), n: fc.integer({ min: 1, max: 4 }), wrong: fc.boolean() }),
    fc.record({ k: fc.constant('give' as const), n: fc.integer({ min: 1, max: 4 }) }),
    fc.record({ k: fc.constant('time' as const), s: fc.integer({ min: 1, max: 20 }) }),
    fc.record({ k: fc.constant('crash' as const), who: fc.constantFrom<Role>('device', 'hub') }),
    fc.record({ k: fc.constant('pay' as const), amount: fc.bigInt(1n, 50_000n) }),
  );

  it('conserves funds with locks, never claims a lock twice, never both claims and refunds one', () => {
    const outcomes = { claimed: 0, refunded: 0, crashes: 0 };
    const codes = new Set<string>();
    let gives = 0;
    fc.assert(
      fc.property(fc.array(cmd, { minLength: 6, maxLength: 25, size: 'medium' }), (cmds) => {
        const p = new Pair(4);
        const terms = new Map<number, { who: Role; hash: Bytes32 }>();
        for (const c of cmds) {
          if (c.k === 'add') {
            if (terms.has(c.n)) continue;
            const hash = hashPreimage(preimageOf(c.n));
            terms.set(c.n, { who: c.who, hash });
            if (c.who === 'device')
              p.apply('device', {
                type: 'pay',
                pays: [{ ref: c.n, amount: c.amount, lock: { hash, expiry: BigInt(Math.floor(p.now / SEC) + c.ttl) } }],
              });
            else
              p.apply('hub', {
                type: 'credit',
                ref: c.n,
                amount: c.amount,
                lock: { hash, expiry: BigInt(Math.floor(p.now / SEC) + c.ttl) },
              });
          } else if (c.k === 'claim') {
            const t = terms.get(c.n);
            if (!t) continue;
            const payee: Role = t.who === 'device' ? 'hub' : 'device';
            p.apply(payee, {
              type: 'claim',
              ref: 100 + c.n,
              hash: t.hash,
              preimage: c.wrong ? preimageOf(c.n + 50) : preimageOf(c.n),
            });
          } else if (c.k === 'give') {
            const t = terms.get(c.n);
            if (!t) continue;
            p.apply(t.who === 'device' ? 'hub' : 'device', { type: 'give-back', ref: 200 + c.n, hash: t.hash });
            gives++;
          } else if (c.k === 'time') {
            p.now += c.s * SEC;
            p.apply('device', { type: 'tick' });
            p.apply('hub', { type: 'tick' });
          } else if (c.k === 'crash') p.crash(c.who);
          else p.apply('device', { type: 'pay', pays: [{ ref: 1000, amount: c.amount }] });
          p.flush();
          for (const role of ['device', 'hub'] as const) {
            const s = p.ch[role].latest.state;
            // The lock list always matches the signed commitment.
            expect(lockCommitment(p.ch[role].locks)).toEqual({
              locksRoot: s.locksRoot,
              lockedByDevice: s.lockedByDevice,
              lockedByHub: s.lockedByHub,
            });
            // Conservation: payouts plus what is locked equal the deposits, and nobody is below zero.
            const pay = payouts(s, FUNDING);
            expect(pay.device + pay.hub + s.lockedByDevice + s.lockedByHub).toBe(FUNDING.device + FUNDING.hub);
            expect(pay.device >= 0n && pay.hub >= 0n).toBe(true);
          }
        }
        // Outcomes, per lock, as each side saw them: at most one, and the same on both sides.
        for (const role of ['device', 'hub'] as const) {
          const seen = new Map<Bytes32, string>();
          for (const e of p.settled(role)) {
            if (e.type !== 'lock-settled') continue;
            expect(seen.has(e.lock.hash)).toBe(false);
            seen.set(e.lock.hash, e.outcome);
          }
        }
        const d = new Map(
          p.settled('device').flatMap((e) => (e.type === 'lock-settled' ? [[e.lock.hash, e.outcome] as const] : [])),
        );
        for (const e of p.settled('hub'))
          if (e.type === 'lock-settled' && d.has(e.lock.hash)) expect(d.get(e.lock.hash)).toBe(e.outcome);
        for (const o of d.values()) outcomes[o]++;
        for (const role of ['device', 'hub'] as const)
          for (const e of p.effects[role]) if (e.type === 'refused' || e.type === 'reject') codes.add(e.error.code);
        outcomes.crashes += cmds.filter((c) => c.k === 'crash').length;
      }),
      { numRuns: 80, seed: 15 },
    );
    // The runs did exercise both outcomes and crashes.
    expect(outcomes.claimed).toBeGreaterThan(5);
    expect(outcomes.refunded).toBeGreaterThan(5);
    expect(outcomes.crashes).toBeGreaterThan(5);
    expect(gives).toBeGreaterThan(5);
    // …and the refusals of a wrong preimage and of a claim too late.
    expect(codes).toContain('BAD_PREIMAGE');
  });
});
