/**
 * Engine audit: transitions the reducer must refuse per protocol-spec §2, each with the channel unchanged.
 */
import { describe, expect, it } from 'vitest';
import { channelContext, checkTransition, zeroState } from './channel.js';
import { stateDigest } from './eip712.js';
import {
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
import { nobleVerifier, type Signer } from './signer.js';
import { MAX_UINT256, MAX_UINT64, type Funding, type Role, type State } from './types.js';
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
/** A signature over the digest `st` had before digests refused out-of-range fields: each word's low 256 bits. */
const by = (s: Signer, st: State) => {
  const low = (v: bigint) => v & MAX_UINT256;
  const wrapped: State = {
    ...st,
    paidByDevice: low(st.paidByDevice),
    paidByHub: low(st.paidByHub),
    round: st.round > MAX_UINT64 ? 0n : st.round,
  };
  return s.signDigest(stateDigest(ctx.separator, wrapped));
};

/** A channel whose counters sit near the top of uint256 (reachable only by netting huge amounts both ways). */
const HIGH: State = {
  ...zeroState(ctx.channelId),
  version: 7n,
  paidByDevice: MAX_UINT256 - 10n,
  paidByHub: MAX_UINT256 - 10n,
};
const highLatest = { state: HIGH, deviceSig: '0x' as never, hubSig: '0x' as never };

describe('audit: counters at 2^256', () => {
  it('the EIP-712 digest of a counter of 2^256 + x is not that of x (no silent truncation)', () => {
    const small: State = { ...zeroState(ctx.channelId), version: 1n, paidByDevice: 5n };
    const wrapped: State = { ...small, paidByDevice: (1n << 256n) + 5n };
    let same = false;
    try {
      same = Buffer.from(stateDigest(ctx.separator, wrapped)).equals(Buffer.from(stateDigest(ctx.separator, small)));
    } catch {
      same = false;
    }
    expect(same).toBe(false);
  });

  it('checkTransition refuses a counter above 2^256 − 1 (MALFORMED)', () => {
    const next: State = { ...HIGH, version: 8n, paidByDevice: MAX_UINT256 + 10n };
    expect(() => checkTransition(HIGH, next, FUNDING, 'device')).toThrow(
      expect.objectContaining({ code: 'MALFORMED' }),
    );
    const round: State = { ...HIGH, version: 8n, round: MAX_UINT64 + 1n };
    expect(() => checkTransition(HIGH, round, FUNDING, 'hub')).toThrow(expect.objectContaining({ code: 'MALFORMED' }));
  });

  it('the hub refuses a device update whose paidByDevice passes 2^256 − 1, channel unchanged', () => {
    const hub = online('hub', { latest: highLatest, signedVersion: 7n });
    const next: State = { ...HIGH, version: 8n, paidByDevice: MAX_UINT256 + 10n };
    const r = run(hub, { type: 'peer-updates', updates: [{ id: 3, state: next, sig: by(deviceKey, next) }] });
    expect(codes(r)).toEqual(['MALFORMED']);
    expect(r.channel).toBe(hub);
    expect(sent(r).map((m) => m.t)).toEqual(['reject']);
  });

  it('the device does not sign a payment past 2^256 − 1: pay() is refused, nothing sent', () => {
    const dev = online('device', { latest: highLatest, signedVersion: 7n });
    const r = run(dev, { type: 'pay', pays: [{ ref: 1, amount: 20n }] });
    expect(sent(r)).toEqual([]);
    expect(codes(r)).toEqual(['MALFORMED']);
    expect(r.channel.signedVersion).toBe(7n);
  });

  it('the hub does not sign a credit past 2^256 − 1: its caller is refused, nothing sent', () => {
    const hub = online('hub', { latest: highLatest, signedVersion: 7n });
    const r = run(hub, { type: 'credit', ref: 1, amount: 20n });
    expect(sent(r)).toEqual([]);
    expect(codes(r)).toEqual(['MALFORMED']);
    expect(r.channel.signedVersion).toBe(7n);
  });

  it('the device refuses a hub credit whose paidByHub passes 2^256 − 1, or whose round passes 2^64 − 1', () => {
    const dev = online('device', { latest: highLatest, signedVersion: 7n });
    for (const next of [
      { ...HIGH, version: 8n, paidByHub: MAX_UINT256 + 10n },
      { ...HIGH, version: 8n, round: MAX_UINT64 + 1n },
    ]) {
      const r = run(dev, { type: 'peer-updates', updates: [{ id: 3, state: next, sig: by(hubKey, next) }] });
      expect(codes(r)).toEqual(['MALFORMED']);
      expect(r.channel).toBe(dev);
      expect(sent(r).map((m) => m.t)).toEqual(['reject']);
    }
  });
});
