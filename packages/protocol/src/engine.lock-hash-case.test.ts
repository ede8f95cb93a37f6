/**
 * A lock's hash as a caller hands it to the engine. The wire carries a hash as 32 bytes, so the peer always reads it
 * as lowercase hex; the engine matches pending locks by their hash string. A lock the payer's engine took with an
 * upper-case (or mixed-case) hash was kept so in its lock list: the state's root is the same on both sides (hashing
 * reads the bytes), but the payee's claim (lowercase, from the wire) found no such lock in the payer's list and was
 * refused `UNKNOWN_LOCK` — the payee, whose preimage is good and in time, could only take the lock on-chain (reveal and
 * force close). The engine now refuses a lock hash that is not the canonical lowercase `Bytes32` (`INVALID_ARGUMENT`,
 * nothing queued or signed), so every lock it holds matches what the peer reads.
 *
 * Two real engines (secp256k1 keys, EIP-712 digests), every frame through `encodeFrame` / `decodeFrame` as the shells
 * send it.
 */
import { describe, expect, it } from 'vitest';
import { channelContext, zeroState } from './channel.js';
import { decodeFrame, encodeFrame, type Message } from './codec.js';
import { stateDigest } from './eip712.js';
import {
  createEngineChannel,
  step,
  type EngineChannel,
  type EngineCrypto,
  type EngineEffect,
  type EngineEvent,
  type EngineRestore,
} from './engine.js';
import { deviceRules } from './engine-device.js';
import { hubRules } from './engine-hub.js';
import { hashPreimage } from './locks.js';
import { nobleVerifier } from './signer.js';
import type { Bytes32, Role } from './types.js';
import { deviceKey, hubKey, params } from './engine.fixture.js';

const ctx = channelContext(params, { device: 1_000_000n, hub: 1_000_000n });
const crypto = (role: Role): EngineCrypto => ({
  digest: (s) => stateDigest(ctx.separator, s),
  sign: (d) => (role === 'device' ? deviceKey : hubKey).signDigest(d),
  recover: (d, sig) => nobleVerifier.recoverAddress(d, sig),
});
const T0 = 1_800_000_000; // seconds

function toEvent(m: Message): EngineEvent | undefined {
  switch (m.t) {
    case 'update':
      return {
        type: 'peer-updates',
        updates: [{ id: m.id, state: m.state, sig: m.sig, route: m.route, lock: m.lock, unlock: m.unlock }],
      };
    case 'ack':
      return { type: 'peer-ack', id: m.id, version: m.version, sig: m.sig };
    case 'reject':
      return { type: 'peer-reject', id: m.id, code: m.code, message: m.message };
    case 'claim':
      return { type: 'peer-claim', id: m.id, hash: m.unlock.hash, preimage: m.unlock.preimage };
    default:
      return undefined;
  }
}

/** Device and hub engines joined through the wire codec. */
class Pair {
  ch: Record<Role, EngineChannel>;
  effects: Record<Role, EngineEffect[]> = { device: [], hub: [] };
  inbox: Record<Role, Message[]> = { device: [], hub: [] };

  constructor() {
    const base = (role: Role): EngineRestore => ({
      role,
      ctx,
      latest: { state: zeroState(ctx.channelId) },
      signedVersion: 0n,
      needsSync: false,
    });
    this.ch = {
      device: createEngineChannel(base('device'), deviceRules),
      hub: createEngineChannel(base('hub'), hubRules),
    };
    this.apply('device', { type: 'connected' });
    this.apply('hub', { type: 'connected' });
  }

  apply(role: Role, ev: EngineEvent): EngineChannel {
    const r = step(this.ch[role], ev, { crypto: crypto(role), now: T0 * 1000 });
    this.ch[role] = r.channel;
    for (const e of r.effects) {
      this.effects[role].push(e);
      if (e.type === 'send') this.inbox[role === 'device' ? 'hub' : 'device'].push(decodeFrame(encodeFrame(e.msg)));
    }
    return r.channel;
  }

  flush(): void {
    for (let i = 0; i < 200; i++) {
      const role: Role | undefined =
        this.inbox.hub.length > 0 ? 'hub' : this.inbox.device.length > 0 ? 'device' : undefined;
      if (!role) return;
      const ev = toEvent(this.inbox[role].shift()!);
      if (ev) this.apply(role, ev);
    }
    throw new Error('no quiescence');
  }

  codes(role: Role): string[] {
    return this.effects[role].flatMap((e) => (e.type === 'refused' || e.type === 'reject' ? [e.error.code] : []));
  }
}

const PREIMAGE = ('0x' + '07'.repeat(32)) as Bytes32;
const HASH = hashPreimage(PREIMAGE); // lowercase, as the wire reads it
const UPPER = ('0x' + HASH.slice(2).toUpperCase()) as Bytes32;
const MIXED = ('0x' + HASH.slice(2, 34).toUpperCase() + HASH.slice(34)) as Bytes32;

describe('engine: a lock hash is taken only in its canonical form (lowercase hex, as the wire reads it)', () => {
  it('a device lock on the lowercase hash is claimed by the hub with its preimage (control)', () => {
    const p = new Pair();
    p.apply('device', {
      type: 'pay',
      pays: [{ ref: 1, amount: 500n, lock: { hash: HASH, expiry: BigInt(T0 + 600) } }],
    });
    p.flush();
    expect(p.ch.hub.locks).toHaveLength(1);
    p.apply('hub', { type: 'claim', ref: 2, hash: HASH, preimage: PREIMAGE });
    p.flush();
    expect(p.codes('device')).toEqual([]);
    expect(p.ch.device.locks).toEqual([]);
    expect(p.ch.device.latest.state).toMatchObject({ paidByDevice: 500n, lockedByDevice: 0n });
    expect(p.ch.hub.latest.state).toEqual(p.ch.device.latest.state);
  });

  for (const [name, hash] of [
    ['upper-case', UPPER],
    ['mixed-case', MIXED],
  ] as const)
    it(`a device pay on the ${name} hash is refused INVALID_ARGUMENT, and nothing is queued, signed or sent`, () => {
      const p = new Pair();
      const before = p.ch.device;
      const after = p.apply('device', {
        type: 'pay',
        pays: [{ ref: 1, amount: 500n, lock: { hash, expiry: BigInt(T0 + 600) } }],
      });
      // Before the fix: the lock was proposed and countersigned with the hash kept as given, and the hub's claim below
      // (lowercase, off the wire) was refused UNKNOWN_LOCK by the device's engine.
      expect(p.effects.device).toContainEqual(
        expect.objectContaining({
          type: 'reject',
          ref: 1,
          error: expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
        }),
      );
      expect(p.inbox.hub).toEqual([]);
      expect(after.latest).toBe(before.latest);
      expect(after.queue).toEqual([]);
      expect(after.proposals).toEqual([]);
      expect(after.signedVersion).toBe(before.signedVersion);
      p.flush();
      p.apply('hub', { type: 'claim', ref: 2, hash: HASH, preimage: PREIMAGE });
      p.flush();
      expect(p.codes('device')).toEqual(['INVALID_ARGUMENT']);
    });

  it('a hub lock toward the device on an upper-case hash is refused INVALID_ARGUMENT before it is queued', () => {
    const p = new Pair();
    const before = p.ch.hub;
    p.apply('hub', { type: 'credit', ref: 1, amount: 500n, lock: { hash: UPPER, expiry: BigInt(T0 + 600) } });
    expect(p.effects.hub).toContainEqual(
      expect.objectContaining({ type: 'reject', ref: 1, error: expect.objectContaining({ code: 'INVALID_ARGUMENT' }) }),
    );
    expect(p.ch.hub).toBe(before);
    expect(p.inbox.device).toEqual([]);
  });
});
