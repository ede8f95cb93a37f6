/**
 * Red team of the cooperative close: a final state the device signed stays valid on-chain for ever (the adjudicator's
 * `cooperativeClose` of an open channel cannot know a newer version), so whoever holds it may close with it later.
 */
import { describe, expect, it } from 'vitest';
import { channelContext, zeroState } from './channel.js';
import type { Message } from './codec.js';
import { stateDigest } from './eip712.js';
import { createEngineChannel, step, type EngineChannel, type EngineEvent, type StepResult } from './engine.js';
import { deviceRules } from './engine-device.js';
import { nobleVerifier } from './signer.js';
import type { State } from './types.js';
import { deviceKey, hubKey, params } from './engine.fixture.js';

const ctx = channelContext(params, { device: 1_000n, hub: 1_000n });
const run = (ch: EngineChannel, ev: EngineEvent): StepResult =>
  step(ch, ev, {
    crypto: {
      digest: (st) => stateDigest(ctx.separator, st),
      sign: (d) => deviceKey.signDigest(d),
      recover: (d, sig) => nobleVerifier.recoverAddress(d, sig),
    },
    now: 1_800_000_000_000,
  });
const sent = (r: StepResult): Message[] => r.effects.flatMap((e) => (e.type === 'send' ? [e.msg] : []));
const byHub = (s: State) => hubKey.signDigest(stateDigest(ctx.separator, s));
/** A device channel at the zero state, connected and synced. */
const connectedDevice = (): EngineChannel =>
  run(
    createEngineChannel(
      { role: 'device', ctx, latest: { state: zeroState(ctx.channelId) }, signedVersion: 0n, needsSync: false },
      deviceRules,
    ),
    { type: 'connected' },
  ).channel;

describe('red team: a final state the hub refused', () => {
  // A hub that refuses the device's final state (PENDING_CREDITS: it still owes a refund) would keep the device's
  // signature on it, were it signed. If the device then took the credit, the hub could countersign the refused final
  // state and send `cooperativeClose` with it while the channel is open: the credit (a market refund, a routed
  // payment) undone — the adjudicator cannot know a newer version of an open channel. So the device asks the hub to
  // sign a final state first (a close frame without a signature) and signs it only once the hub's signature is in.
  it('the device hands out no final state it signed: its close asks the hub to sign first', () => {
    let device = connectedDevice();
    const signedFinals: State[] = [];
    const note = (r: StepResult) => {
      for (const m of sent(r)) if (m.t === 'close' && m.sig !== undefined) signedFinals.push(m.state);
      device = r.channel;
      return r;
    };
    const close = note(run(device, { type: 'close', ref: 1 }));
    const proposal = sent(close).find((m) => m.t === 'close')!;
    expect(proposal).toMatchObject({ t: 'close', state: { isFinal: true } });
    note(run(device, { type: 'peer-reject', id: proposal.id, code: 'PENDING_CREDITS' }));
    const credit: State = { ...zeroState(ctx.channelId), version: 2n, paidByHub: 5n };
    note(run(device, { type: 'peer-updates', updates: [{ id: 9, state: credit, sig: byHub(credit) }] }));
    expect(device.latest.state.paidByHub).toBe(5n); // the device took the credit: it holds it as paid
    expect(signedFinals).toEqual([]); // and the hub holds no final state of the device's to undo it with

    // Closed again: the hub signs the final state first, the device countersigns it, keeps it, and tells the hub.
    const again = note(run(device, { type: 'close', ref: 2 }));
    const ask = sent(again).find((m) => m.t === 'close')!;
    if (ask.t !== 'close') throw new Error('no close sent');
    expect(ask.sig).toBeUndefined();
    expect(ask.state).toMatchObject({ isFinal: true, paidByHub: 5n, version: 3n });
    const acked = note(run(device, { type: 'peer-ack', id: ask.id, version: 3n, sig: byHub(ask.state) }));
    expect(acked.effects).toContainEqual(expect.objectContaining({ type: 'resolve', ref: 2 }));
    expect(device.latest).toMatchObject({ state: ask.state });
    expect(device.latest.deviceSig).toBeDefined();
    expect(sent(acked)).toContainEqual(expect.objectContaining({ t: 'ack', version: 3n }));
    expect(signedFinals).toEqual([]);
  });

  it('a forged ack of the final state is not countersigned', () => {
    let device = connectedDevice();
    const close = run(device, { type: 'close', ref: 1 });
    device = close.channel;
    const ask = sent(close).find((m) => m.t === 'close')!;
    if (ask.t !== 'close') throw new Error('no close sent');
    const forged = run(device, {
      type: 'peer-ack',
      id: ask.id,
      version: ask.state.version,
      sig: deviceKey.signDigest(stateDigest(ctx.separator, ask.state)),
    });
    expect(forged.effects.some((e) => e.type === 'send')).toBe(false);
    expect(forged.channel.latest.state.isFinal).toBe(false);
  });
});
