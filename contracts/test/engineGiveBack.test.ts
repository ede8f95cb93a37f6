/**
 * A give-back the hub refused, against the real adjudicator. A device (payee) that gives back a lock the hub pays
 * signs the state without it first (a `cancel`, protocol-spec §2). If the hub refuses that update it still holds the
 * device's signature on it, and the adjudicator takes a state only the other party signed: the hub can register it
 * (force close, or challenge the device's force close with the older state) as long as no state both signed is above
 * it — and the lock then goes back to the hub whatever is revealed on-chain. The device's engine used to drop the
 * refused give-back and take a later claim of that very lock, sending its preimage to the hub: a hub that refuses its
 * give-back and then its claim update takes the preimage (to claim the payer's lock upstream) and pays the device
 * nothing. The device now counts a refused give-back as a refused state of its own (`refused`, voided by the next
 * state both signed, as a refused payment is) and keeps every give-back it signed until a state both signed reaches
 * it (`givenBack`, durable: packages/protocol/src/engine.giveback-restart.test.ts); it claims no lock given back in one
 * still outstanding (`INVALID_ARGUMENT`, the code of claiming a lock it is giving back): the preimage stays home until
 * the give-back is void.
 *
 * Two real engines (device and hub rules), every frame through the wire codec; the hub's misbehaviour is played by
 * intercepting its frames.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { stateDigest } from '@trickle/protocol/eip712';
import { hashPreimage } from '@trickle/protocol/locks';
import { signatureToHex } from '@trickle/protocol/signer';
import type { Bytes32, SignedState } from '@trickle/protocol/types';
import { Pair } from './engine-pair.js';
import { CHALLENGE, createFixture, deltas, ETH, ONE_ETH, type Fixture } from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

const PREIMAGE = `0x${'09'.repeat(32)}` as Bytes32;
const HASH = hashPreimage(PREIMAGE);
const AMOUNT = 1_000n;

/**
 * A channel where the hub pays the device a lock (both signed, version 1), the device gives it back, and the hub
 * refuses that update while keeping the device's signature on it. @returns the pair, the state both signed with the
 * lock, its lock list and the give-back the hub kept
 */
async function refusedGiveBack(): Promise<{
  p: Pair;
  withLock: SignedState;
  kept: SignedState;
  channelId: string;
}> {
  const funding = { device: ONE_ETH, hub: ONE_ETH };
  const { params } = await fx.open(ETH, funding.device, funding.hub);
  const p = new Pair(fx, { params, funding, nowSec: await fx.chain.latestTimestamp() });
  p.apply('hub', { type: 'credit', ref: 1, amount: AMOUNT, lock: { hash: HASH, expiry: p.nowSec + 3600n } });
  p.flush();
  const withLock = p.ch.device.latest;
  expect(p.ch.device.locks).toHaveLength(1);
  let kept: SignedState | undefined;
  p.apply('device', { type: 'give-back', ref: 2, hash: HASH });
  p.flush((m) => {
    if (m.t !== 'update') return false;
    if (m.unlock && !kept) {
      // The hub keeps the device's signature on the give-back and refuses it.
      kept = { state: m.state, deviceSig: signatureToHex(m.sig) };
      p.inbox.device.push({
        t: 'reject',
        id: m.id,
        channelId: m.state.channelId,
        code: 'INTERNAL',
        message: 'refused',
        latest: p.ch.hub.latest,
      });
    }
    return true; // and answers nothing else the device sends meanwhile
  });
  expect(kept).toBeDefined();
  expect(kept!.state.version).toBeGreaterThan(withLock.state.version);
  expect(p.ch.device.latest).toEqual(withLock); // the give-back never became a state both signed
  p.inbox.hub = [];
  return { p, withLock, kept: kept!, channelId: withLock.state.channelId };
}

describe('a give-back the hub refused', () => {
  it('the adjudicator takes it from the hub: the lock goes back to the hub though its preimage was revealed in time', async () => {
    const { p, withLock, kept, channelId } = await refusedGiveBack();
    await fx.adj.connect(fx.relayer).reveal(PREIMAGE);
    await fx.adj.connect(fx.device).forceClose(withLock, { locks: p.ch.device.locks });
    // The hub's transaction is its consent: the device's signature on the give-back is all it needs.
    const hubSig = signatureToHex(fx.hubKey.signDigest(stateDigest(p.sep, kept.state)));
    await fx.adj.connect(fx.hub).challenge({ ...kept, hubSig });
    await fx.chain.increaseTime(CHALLENGE + 1n);
    const [d, h] = await deltas(fx, ETH, [fx.device.address, fx.hub.address], () =>
      fx.adj.connect(fx.relayer).settle(channelId as never),
    );
    expect([d, h]).toEqual([ONE_ETH, ONE_ETH]); // the revealed lock paid the device nothing
  });

  it('so the device does not claim that lock while it is outstanding: its preimage does not leave (INVALID_ARGUMENT)', async () => {
    const { p } = await refusedGiveBack();
    const before = p.ch.device;
    p.effects.device = [];
    p.apply('device', { type: 'claim', ref: 3, hash: HASH, preimage: PREIMAGE });
    // Before the fix: the claim was taken and its frame, with the preimage, sent to the hub.
    expect(p.inbox.hub.filter((m) => m.t === 'claim')).toEqual([]);
    expect(p.effects.device).toContainEqual(
      expect.objectContaining({ type: 'reject', ref: 3, error: expect.objectContaining({ code: 'INVALID_ARGUMENT' }) }),
    );
    expect(p.ch.device).toBe(before);
    // The device knows the hub holds a state of its own that it refused (it gives the hub a lock back).
    expect(p.ch.device.refused).toBe(2n);
  });

  it('once a state both signed is above it (the hub countersigns the bump), the device claims and is paid', async () => {
    const { p, kept, channelId } = await refusedGiveBack();
    // The device voids its refused state with the latest counters one version up; an honest hub countersigns it.
    p.apply('device', { type: 'disconnected' });
    p.apply('device', { type: 'connected' });
    p.apply('device', { type: 'peer-sync', id: 9, latest: p.ch.hub.latest });
    p.inbox.hub = p.inbox.hub.filter((m) => m.t === 'update');
    p.flush();
    // The hub's ack (checked on the device's next step).
    expect((p.ch.device.unchecked ?? p.ch.device.latest).state.version).toBeGreaterThan(kept.state.version);
    expect(p.ch.device.locks).toHaveLength(1);
    p.apply('device', { type: 'claim', ref: 3, hash: HASH, preimage: PREIMAGE });
    p.flush();
    expect(p.ch.device.locks).toEqual([]);
    expect(p.ch.device.latest.state).toMatchObject({ paidByHub: AMOUNT, lockedByHub: 0n });
    expect(p.ch.hub.latest.state).toEqual(p.ch.device.latest.state);
    // On-chain the give-back is stale now: the device's newest state beats it.
    const hubSig = signatureToHex(fx.hubKey.signDigest(stateDigest(p.sep, kept.state)));
    await fx.adj.connect(fx.hub).forceClose({ ...kept, hubSig });
    await fx.adj.connect(fx.device).challenge(p.ch.device.latest);
    await fx.chain.increaseTime(CHALLENGE + 1n);
    const [d] = await deltas(fx, ETH, [fx.device.address], () => fx.adj.connect(fx.relayer).settle(channelId as never));
    expect(d).toBe(ONE_ETH + AMOUNT);
  });
});
