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
import { EnginePair } from './engine-pair.fixture.js';
import { hashPreimage } from './locks.js';
import type { Bytes32 } from './types.js';

const T0 = 1_800_000_000; // seconds
/** Device and hub engines joined through the wire codec, at T0. */
const newPair = (): EnginePair => new EnginePair({ nowSec: BigInt(T0) });

const PREIMAGE = ('0x' + '07'.repeat(32)) as Bytes32;
const HASH = hashPreimage(PREIMAGE); // lowercase, as the wire reads it
const UPPER = ('0x' + HASH.slice(2).toUpperCase()) as Bytes32;
const MIXED = ('0x' + HASH.slice(2, 34).toUpperCase() + HASH.slice(34)) as Bytes32;

describe('engine: a lock hash is taken only in its canonical form (lowercase hex, as the wire reads it)', () => {
  it('a device lock on the lowercase hash is claimed by the hub with its preimage (control)', () => {
    const p = newPair();
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
      const p = newPair();
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
    const p = newPair();
    const before = p.ch.hub;
    p.apply('hub', { type: 'credit', ref: 1, amount: 500n, lock: { hash: UPPER, expiry: BigInt(T0 + 600) } });
    expect(p.effects.hub).toContainEqual(
      expect.objectContaining({ type: 'reject', ref: 1, error: expect.objectContaining({ code: 'INVALID_ARGUMENT' }) }),
    );
    expect(p.ch.hub).toBe(before);
    expect(p.inbox.device).toEqual([]);
  });
});
