/**
 * A give-back the device signed, forgotten over a restart. A device (payee) giving back a lock the hub pays signs the
 * state without it first (a `cancel`, protocol-spec §2), written at once (a gated persist) and then sent. A hub that
 * neither countersigns nor refuses it still holds the device's signature on it, and the adjudicator takes a state only
 * the other party signed: registered (a force close, or the challenge of the device's force close), the give-back
 * returns the lock to the hub whatever is revealed on-chain (contracts/test/engineGiveBack.test.ts plays that part).
 * The device's record kept nothing of it, so after a restart — proposals in flight are memory only — and a sync with
 * a hub that shows the old latest state and refuses the device's bump, the device took a claim of that very lock: its
 * preimage went to the hub, which could claim the payer's lock upstream with it and take this one back on-chain.
 *
 * Now the device keeps its give-backs no state both signed has reached (`givenBack`: hash, version), durable with the
 * give-back, restored with the record, and refuses the claim of that lock only (`INVALID_ARGUMENT`) until a state both
 * signed reaches the version. Its other locks are claimed as ever — also before any sync, so a payee restarted while
 * the hub is down still shows them (and its lock guard reveals them on-chain in time).
 *
 * Two real engines (secp256k1 keys, EIP-712 digests), every frame through `encodeFrame` / `decodeFrame`; the device
 * restarts from what its shell wrote (the channel of its last persisting step, through the record's JSON).
 */
import { describe, expect, it } from 'vitest';
import type { Message } from './codec.js';
import type { EngineRestore } from './engine.js';
import { EnginePair, toEvent } from './engine-pair.fixture.js';
import { parseJson, stringifyJson } from './json.js';
import { hashPreimage } from './locks.js';
import type { Bytes32 } from './types.js';

const T0 = 1_800_000_000; // seconds

/** The engine pair at T0, whose device restarts from what its shell wrote. */
class Pair extends EnginePair {
  constructor() {
    super({ nowSec: BigInt(T0) });
  }

  /**
   * The device process dies (what was in flight, both ways, is lost) and starts again from what its shell wrote: the
   * record's fields, through its JSON, as a device client keeps and restores them.
   */
  restartDevice(): void {
    const w = this.written.device;
    const record = parseJson<{
      latest: EngineRestore['latest'];
      locks?: EngineRestore['locks'];
      signedVersion: bigint;
      refused?: bigint;
      givenBack?: EngineRestore['givenBack'];
    }>(
      stringifyJson({
        latest: w.latest,
        ...(w.locks.length > 0 ? { locks: w.locks } : {}),
        signedVersion: w.reservedVersion > w.signedVersion ? w.reservedVersion : w.signedVersion,
        ...(w.refused !== undefined ? { refused: w.refused } : {}),
        ...(w.givenBack ? { givenBack: w.givenBack } : {}),
      }),
    );
    this.restart('device', {
      latest: record.latest,
      locks: record.locks,
      signedVersion: record.signedVersion,
      refused: record.refused,
      givenBack: record.givenBack,
      needsSync: true,
    });
  }

  /** The device's sync: the hub answers with its latest state (and lock list), through the codec. */
  sync(hubTakes?: (m: Message) => boolean): void {
    this.apply('hub', { type: 'peer-sync', id: 9, latest: this.ch.device.latest });
    this.flush(hubTakes);
  }

  claim(ref: number, hash: Bytes32, preimage: Bytes32): { code?: string; sent: boolean } {
    this.effects.device = [];
    const before = this.inbox.hub.length;
    this.apply('device', { type: 'claim', ref, hash, preimage });
    const rejected = this.effects.device.find((e) => e.type === 'reject' && e.ref === ref);
    const sent = this.inbox.hub.slice(before).some((m) => m.t === 'claim' && m.unlock.hash === hash);
    return rejected?.type === 'reject' ? { code: rejected.error.code, sent } : { sent };
  }
}

const PREIMAGE = ('0x' + '07'.repeat(32)) as Bytes32;
const HASH = hashPreimage(PREIMAGE);
const PREIMAGE2 = ('0x' + '08'.repeat(32)) as Bytes32;
const HASH2 = hashPreimage(PREIMAGE2);
const EXPIRY = BigInt(T0 + 3600);

/** Drops a frame for the hub (it never answers it) when `m` is the device's give-back. */
const dropGiveBack = (m: Message): boolean => m.t === 'update' && m.unlock !== undefined && !m.unlock.preimage;
/** The device's bump (an update that moves nothing): the hub refuses it, keeping its signature. */
const refuseBump =
  (p: Pair) =>
  (m: Message): boolean => {
    if (m.t !== 'update' || m.unlock || m.lock) return false;
    p.inbox.device.push({
      t: 'reject',
      id: m.id,
      channelId: m.state.channelId,
      code: 'INTERNAL',
      message: 'refused',
      latest: p.ch.hub.latest,
    } as Message);
    return true;
  };

/**
 * Two locks the hub pays the device (both signed); the device gives back the first, and the hub never answers. The
 * device's shell wrote the give-back (gated, before the frame left).
 */
function givenBackUnanswered(): { p: Pair; version: bigint } {
  const p = new Pair();
  p.apply('hub', { type: 'credit', ref: 1, amount: 700n, lock: { hash: HASH, expiry: EXPIRY } });
  p.flush();
  p.apply('hub', { type: 'credit', ref: 2, amount: 300n, lock: { hash: HASH2, expiry: EXPIRY } });
  p.flush();
  expect(p.ch.device.locks.map((l) => l.hash)).toEqual([HASH, HASH2]);
  p.effects.device = [];
  p.apply('device', { type: 'give-back', ref: 3, hash: HASH });
  // Written before it leaves: the persist is gated and comes first.
  const sendAt = p.effects.device.findIndex((e) => e.type === 'send');
  expect(p.effects.device[0]).toMatchObject({ type: 'persist', gate: true });
  expect(sendAt).toBeGreaterThan(0);
  const update = p.inbox.hub.find((m) => m.t === 'update' && m.unlock?.hash === HASH);
  expect(update).toBeDefined();
  const version = (update as Extract<Message, { t: 'update' }>).state.version;
  p.flush(dropGiveBack);
  expect(p.ch.device.latest.state.version).toBeLessThan(version); // never became a state both signed
  expect(p.ch.hub.locks).toHaveLength(2);
  return { p, version };
}

describe('engine: a give-back the device signed is remembered until a state both signed reaches it', () => {
  it('is in what the shell writes before the give-back leaves (hash, version)', () => {
    const { p, version } = givenBackUnanswered();
    expect(p.written.device.givenBack).toEqual([{ hash: HASH, version }]);
  });

  it('restarted, with a hub that shows the old latest and refuses the bump: no claim of that lock, others claimed', () => {
    const { p, version } = givenBackUnanswered();
    p.restartDevice();
    p.sync(refuseBump(p));
    // The hub's latest still has both locks; the bump that would void the give-back was refused.
    expect(p.ch.device.latest.state.version).toBeLessThan(version);
    expect(p.ch.device.locks).toHaveLength(2);
    expect(p.ch.device.synced).toBe(true);
    // Before the fix the claim was taken and its frame, with the preimage, sent to the hub.
    expect(p.claim(10, HASH, PREIMAGE)).toEqual({ code: 'INVALID_ARGUMENT', sent: false });
    expect(p.ch.device.claims).toEqual([]);
    // Another lock is claimed as ever: its preimage shown (this hub, which refused the bump, proposes its claim
    // update at a version the device may have signed before the restart, so that is refused; the claim stands and
    // its lock settles on-chain, where a revealed preimage decides it).
    expect(p.claim(11, HASH2, PREIMAGE2)).toEqual({ sent: true });
    expect(p.ch.device.claims.map((c) => c.hash)).toEqual([HASH2]);
    expect(p.ch.device.givenBack).toEqual([{ hash: HASH, version }]);
  });

  it('restarted while the hub is down: that lock refused, another claim taken (shown once the hub is back)', () => {
    const { p, version } = givenBackUnanswered();
    p.restartDevice();
    p.apply('device', { type: 'disconnected' });
    expect(p.claim(10, HASH, PREIMAGE)).toEqual({ code: 'INVALID_ARGUMENT', sent: false });
    expect(p.claim(11, HASH2, PREIMAGE2)).toEqual({ sent: false }); // taken, held until the sync
    expect(p.ch.device.claims.map((c) => c.hash)).toEqual([HASH2]);
    expect(p.ch.device.givenBack).toEqual([{ hash: HASH, version }]);
  });

  it('an honest hub countersigns the bump: the give-back is void, its lock claimed and paid', () => {
    const { p, version } = givenBackUnanswered();
    p.restartDevice();
    p.sync();
    // The bump, acked (its signature checked on the device's next step), is above the give-back.
    expect((p.ch.device.unchecked ?? p.ch.device.latest).state.version).toBeGreaterThan(version);
    expect(p.claim(10, HASH, PREIMAGE)).toEqual({ sent: true });
    expect(p.ch.device.givenBack).toBeUndefined(); // dropped once a state both signed reached it
    p.flush();
    expect(p.ch.device.locks.map((l) => l.hash)).toEqual([HASH2]);
    expect(p.ch.device.latest.state.paidByHub).toBe(700n);
    expect(p.written.device.givenBack).toBeUndefined();
  });

  it('a hub that countersigned the give-back (its ack lost): the sync brings it back, the lock is gone (UNKNOWN_LOCK)', () => {
    const p = new Pair();
    p.apply('hub', { type: 'credit', ref: 1, amount: 700n, lock: { hash: HASH, expiry: EXPIRY } });
    p.flush();
    p.apply('device', { type: 'give-back', ref: 3, hash: HASH });
    // The hub countersigns; its ack never reaches the device, which restarts.
    while (p.inbox.hub.length > 0) p.apply('hub', toEvent(p.inbox.hub.shift()!)!);
    expect(p.inbox.device.some((m) => m.t === 'ack')).toBe(true);
    expect(p.ch.hub.locks).toEqual([]);
    p.restartDevice();
    expect(p.ch.device.givenBack).toHaveLength(1);
    p.sync();
    expect(p.ch.device.locks).toEqual([]);
    expect(p.ch.device.givenBack).toBeUndefined();
    expect(p.claim(10, HASH, PREIMAGE)).toEqual({ code: 'UNKNOWN_LOCK', sent: false });
  });

  it('a give-back the hub refused holds back the claim of that lock only (no restart)', () => {
    const p = new Pair();
    p.apply('hub', { type: 'credit', ref: 1, amount: 700n, lock: { hash: HASH, expiry: EXPIRY } });
    p.flush();
    p.apply('hub', { type: 'credit', ref: 2, amount: 300n, lock: { hash: HASH2, expiry: EXPIRY } });
    p.flush();
    p.apply('device', { type: 'give-back', ref: 3, hash: HASH });
    // The hub refuses the give-back, keeping the device's signature, and answers nothing else (the bump).
    p.flush((m) => {
      if (!dropGiveBack(m)) return true;
      const u = m as Extract<Message, { t: 'update' }>;
      p.inbox.device.push({
        t: 'reject',
        id: u.id,
        channelId: u.state.channelId,
        code: 'INTERNAL',
        message: 'refused',
        latest: p.ch.hub.latest,
      } as Message);
      return true;
    });
    expect(p.ch.device.refused).toBeDefined();
    expect(p.claim(10, HASH, PREIMAGE)).toEqual({ code: 'INVALID_ARGUMENT', sent: false });
    expect(p.claim(11, HASH2, PREIMAGE2)).toEqual({ sent: true });
  });
});
