/**
 * Attacks on the engine the way payment-channel users get bitten: each ends in a typed refusal with the channel
 * unchanged, or is shown harmless.
 */
import { describe, expect, it } from 'vitest';
import { channelContext, zeroState } from './channel.js';
import { stateDigest } from './eip712.js';
import {
  DEFAULT_MAX_LOCK_SECONDS,
  createEngineChannel,
  step,
  type EngineChannel,
  type EngineCrypto,
  type EngineEvent,
  type EngineRestore,
  type StepResult,
} from './engine.js';
import { deviceRules } from './engine-device.js';
import { hubRules } from './engine-hub.js';
import { hashPreimage, lockCommitment } from './locks.js';
import { nobleVerifier, type Signer } from './signer.js';
import { MAX_UINT64, type Bytes32, type Funding, type Role, type State } from './types.js';
import type { Message } from './codec.js';
import { deviceKey, hubKey, params } from './engine.fixture.js';

const FUNDING: Funding = { device: 1_000_000n, hub: 1_000_000n };
const ctx = channelContext(params, FUNDING);
const crypto = (s: Signer): EngineCrypto => ({
  digest: (st) => stateDigest(ctx.separator, st),
  sign: (d) => s.signDigest(d),
  recover: (d, sig) => nobleVerifier.recoverAddress(d, sig),
});
const CRYPTO: Record<Role, EngineCrypto> = { device: crypto(deviceKey), hub: crypto(hubKey) };
const T0 = 1_800_000_000;
const run = (ch: EngineChannel, ev: EngineEvent): StepResult =>
  step(ch, ev, { crypto: CRYPTO[ch.role], now: T0 * 1000 });
const online = (role: Role, o: Partial<EngineRestore> = {}) =>
  run(
    createEngineChannel(
      { role, ctx, latest: { state: zeroState(ctx.channelId) }, signedVersion: 0n, needsSync: false, ...o },
      role === 'hub' ? hubRules : deviceRules,
    ),
    { type: 'connected' },
  ).channel;
const sent = (r: StepResult): Message[] => r.effects.flatMap((e) => (e.type === 'send' ? [e.msg] : []));
const codes = (r: StepResult) =>
  r.effects.flatMap((e) => (e.type === 'refused' || e.type === 'reject' ? [e.error.code] : []));
const signed = (s: State) => deviceKey.signDigest(stateDigest(ctx.separator, s));

describe('red team: versions at the top of uint64', () => {
  it('a device jumps to version 2^64 − 1 (harmless to the hub); a hub credit then is refused to its caller, nothing signed', () => {
    const hub = online('hub');
    const top: State = { ...zeroState(ctx.channelId), version: MAX_UINT64, paidByDevice: 5n };
    const h = run(hub, { type: 'peer-updates', updates: [{ id: 1, state: top, sig: signed(top) }] }).channel;
    expect(h.latest.state).toEqual(top);
    // Without the bound the hub signed and stored a state at 2^64 that no frame can carry: the credit (a routed
    // payment to this device) then waited forever and its payer was never refunded.
    const c = run(h, { type: 'credit', ref: 7, amount: 1n });
    expect(codes(c)).toEqual(['MALFORMED']);
    expect(c.effects.map((e) => e.type)).toEqual(['reject']);
    expect(c.channel.signedVersion).toBe(MAX_UINT64);
    expect(c.channel.proposals).toEqual([]);
    expect(c.channel.latest).toBe(h.latest);
    // A hub lock toward the device: the same.
    const l = run(h, {
      type: 'credit',
      ref: 8,
      amount: 1n,
      lock: { hash: hashPreimage(('0x' + '05'.repeat(32)) as Bytes32), expiry: BigInt(T0 + 600) },
    });
    expect(codes(l)).toEqual(['MALFORMED']);
    expect(l.channel.proposals).toEqual([]);
  });

  it('a device at version 2^64 − 1 signs nothing more: pay() and close() fail with MALFORMED, channel unchanged', () => {
    const top: State = { ...zeroState(ctx.channelId), version: MAX_UINT64, paidByDevice: 5n };
    const dev = online('device', { latest: { state: top }, signedVersion: MAX_UINT64 });
    const p = run(dev, { type: 'pay', pays: [{ ref: 1, amount: 1n }] });
    expect(codes(p)).toEqual(['MALFORMED']);
    expect(sent(p)).toEqual([]);
    expect(p.channel.signedVersion).toBe(MAX_UINT64);
    const c = run(dev, { type: 'close', ref: 2 });
    expect(codes(c)).toEqual(['MALFORMED']);
    expect(sent(c)).toEqual([]);
    expect(c.channel.closeRefs).toEqual([]);
  });
});

describe('red team: a final state over pending locks', () => {
  const lockUp = () => {
    const dev = online('device');
    const hub = online('hub');
    const hash = hashPreimage(('0x' + '01'.repeat(32)) as Bytes32);
    const r1 = run(dev, { type: 'pay', pays: [{ ref: 1, amount: 10n, lock: { hash, expiry: BigInt(T0 + 600) } }] });
    const up = sent(r1).find((m) => m.t === 'update') as Extract<Message, { t: 'update' }>;
    const r2 = run(hub, {
      type: 'peer-updates',
      updates: [{ id: up.id, state: up.state, sig: up.sig, lock: up.lock }],
    });
    const ack = sent(r2).find((m) => m.t === 'ack') as Extract<Message, { t: 'ack' }>;
    const r3 = run(r1.channel, { type: 'peer-ack', id: ack.id, version: ack.version, sig: ack.sig });
    expect(r2.channel.locks).toHaveLength(1);
    expect(r3.channel.locks).toHaveLength(1);
    return { hub: r2.channel, dev: r3.channel, v: up.state };
  };

  it('the hub refuses a close whose final state keeps the locks: BAD_FINAL, channel unchanged', () => {
    // The adjudicator closes cooperatively only without locks, and nothing can follow a final state to claim or
    // return them off-chain: the hub used to countersign it, leaving a final state only a force close could use.
    const { hub, v } = lockUp();
    const fin: State = { ...v, version: v.version + 1n, isFinal: true };
    const r = run(hub, { type: 'peer-close', id: 5, state: fin, sig: signed(fin), owes: false });
    expect(codes(r)).toEqual(['BAD_FINAL']);
    expect(r.channel).toBe(hub);
    expect(sent(r)).toMatchObject([{ t: 'reject', id: 5, code: 'BAD_FINAL' }]);
    // Dropping the locks from the final state instead: MALFORMED (locks move only by lock transitions).
    const dropped: State = { ...fin, locksRoot: zeroState(ctx.channelId).locksRoot, lockedByDevice: 0n };
    const d = run(hub, { type: 'peer-close', id: 6, state: dropped, sig: signed(dropped), owes: false });
    expect(codes(d)).toEqual(['MALFORMED']);
    expect(d.channel).toBe(hub);
  });

  it('the device does not sign one: close() fails with BAD_FINAL at once (the client then force-closes with the locks)', () => {
    const { dev } = lockUp();
    const r = run(dev, { type: 'close', ref: 9 });
    expect(r.effects).toMatchObject([{ type: 'reject', ref: 9, error: { code: 'BAD_FINAL' } }]);
    expect(sent(r)).toEqual([]);
    expect(r.channel.signedVersion).toBe(dev.signedVersion);
    expect(r.channel.closeRefs).toEqual([]);
  });
});

describe('red team: a lock that expires too far ahead', () => {
  // On-chain settlement waits for every pending lock's expiry: a lock of 1 unit expiring in 2^64 − 1 seconds froze
  // the channel — the counterparty's whole deposit — for good, since nobody can claim it without the preimage.
  const far = BigInt(T0) + BigInt(DEFAULT_MAX_LOCK_SECONDS) + 1n;
  const hash = hashPreimage(('0x' + '07'.repeat(32)) as Bytes32);

  it('the hub refuses a device lock beyond maxLockSeconds: LIMIT_EXCEEDED, channel unchanged; at the bound it is taken', () => {
    const hub = online('hub');
    for (const expiry of [far, MAX_UINT64]) {
      const lock = { amount: 1n, hash, expiry };
      const s: State = { ...zeroState(ctx.channelId), version: 1n, ...lockCommitment([{ ...lock, payer: 'device' }]) };
      const r = run(hub, { type: 'peer-updates', updates: [{ id: 3, state: s, sig: signed(s), lock }] });
      expect(codes(r)).toEqual(['LIMIT_EXCEEDED']);
      expect(r.channel).toBe(hub);
      expect(sent(r)).toMatchObject([{ t: 'reject', id: 3, code: 'LIMIT_EXCEEDED' }]);
    }
    const lock = { amount: 1n, hash, expiry: far - 1n };
    const s: State = { ...zeroState(ctx.channelId), version: 1n, ...lockCommitment([{ ...lock, payer: 'device' }]) };
    const ok = run(hub, { type: 'peer-updates', updates: [{ id: 4, state: s, sig: signed(s), lock }] });
    expect(sent(ok).map((m) => m.t)).toEqual(['ack']);
  });

  it('the device refuses a hub lock beyond it, and signs none of its own beyond it', () => {
    const dev = online('device');
    const lock = { amount: 1n, hash, expiry: far };
    const s: State = { ...zeroState(ctx.channelId), version: 1n, ...lockCommitment([{ ...lock, payer: 'hub' }]) };
    const fromHub = hubKey.signDigest(stateDigest(ctx.separator, s));
    const r = run(dev, { type: 'peer-updates', updates: [{ id: 3, state: s, sig: fromHub, lock }] });
    expect(codes(r)).toContain('LIMIT_EXCEEDED');
    expect(r.channel.latest).toBe(dev.latest);
    expect(r.channel.locks).toEqual([]);
    const own = run(dev, { type: 'pay', pays: [{ ref: 1, amount: 1n, lock: { hash, expiry: far } }] });
    expect(codes(own)).toEqual(['LIMIT_EXCEEDED']);
    expect(sent(own)).toEqual([]);
    const hubOwn = run(online('hub'), { type: 'credit', ref: 2, amount: 1n, lock: { hash, expiry: far } });
    expect(codes(hubOwn)).toEqual(['LIMIT_EXCEEDED', 'LIMIT_EXCEEDED']);
  });
});
