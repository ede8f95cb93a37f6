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
import { nobleSigner, nobleVerifier } from './signer.js';
import type { Address, Bytes32, ChannelParams, State } from './types.js';

const deviceKey = nobleSigner('0x' + '11'.repeat(32));
const hubKey = nobleSigner('0x' + '22'.repeat(32));
const params: ChannelParams = {
  chainId: 31337n,
  adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address,
  device: deviceKey.address,
  hub: hubKey.address,
  token: '0x0000000000000000000000000000000000000000' as Address,
  challengeDuration: 3600n,
  salt: ('0x' + '00'.repeat(32)) as Bytes32,
};
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

describe('red team: a final state the hub refused', () => {
  // A hub that refuses the device's final state (PENDING_CREDITS: it still owes a refund) keeps the device's signature
  // on it. If the device then takes the credit, the hub can countersign the refused final state and send
  // `cooperativeClose` with it while the channel is open: the credit (a market refund, a routed payment) is undone.
  // The adjudicator refuses such a final state only while a newer one is registered (cooperativeCloseDisputed:
  // StaleVersion). Closing that gap needs a protocol change (the hub signing the final state first, so a refusal
  // leaves no device signature behind); left to the protocol's owners.
  it.fails('every final state the device signed pays it at least what it has been credited since', () => {
    let device = run(
      createEngineChannel(
        { role: 'device', ctx, latest: { state: zeroState(ctx.channelId) }, signedVersion: 0n, needsSync: false },
        deviceRules,
      ),
      { type: 'connected' },
    ).channel;
    const finals: State[] = [];
    const note = (r: StepResult) => {
      for (const m of sent(r)) if (m.t === 'close') finals.push(m.state);
      device = r.channel;
      return r;
    };
    const close = note(run(device, { type: 'close', ref: 1 }));
    const proposal = sent(close).find((m) => m.t === 'close')!;
    note(run(device, { type: 'peer-reject', id: proposal.id, code: 'PENDING_CREDITS' }));
    const credit: State = { ...zeroState(ctx.channelId), version: 2n, paidByHub: 5n };
    note(run(device, { type: 'peer-updates', updates: [{ id: 9, state: credit, sig: byHub(credit) }] }));
    expect(device.latest.state.paidByHub).toBe(5n); // the device took the credit: it holds it as paid

    expect(finals.length).toBeGreaterThan(0);
    for (const f of finals) expect(f.paidByHub).toBeGreaterThanOrEqual(device.latest.state.paidByHub);
  });
});
