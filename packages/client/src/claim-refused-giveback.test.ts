import { describe, expect, it } from 'vitest';
import { stateDigest } from '@trickle/protocol/eip712';
import { hashPreimage, lockCommitment, type Lock } from '@trickle/protocol/locks';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import type { Bytes32, SignedState, State } from '@trickle/protocol/types';
import { standaloneChannel, until } from './channel.fixture.js';

/**
 * A give-back the hub refused (see contracts/test/engineGiveBack.test.ts for the adjudicator's side): the hub still
 * holds the device's signature on the state without the lock, and registered it returns the lock to the hub whatever
 * is revealed on-chain. While that state is outstanding the device's `claim()` of the lock is refused
 * `INVALID_ARGUMENT` by the engine's rule — and the client, which writes a preimage durably before it is shown (where
 * the lock guard would later reveal it on-chain), must not write it either: it asks the engine's `claimRefusal` rather
 * than its own copy of the rules, which knew neither this case nor a give-back in flight.
 */
const device = nobleSigner(`0x${'11'.repeat(32)}`);
const hub = nobleSigner(`0x${'22'.repeat(32)}`);
const PREIMAGE = `0x${'09'.repeat(32)}` as Bytes32;
const HASH = hashPreimage(PREIMAGE);

describe('client: claim() while a give-back the hub refused is outstanding', () => {
  it('is refused INVALID_ARGUMENT; the preimage is neither stored nor sent', async () => {
    let withLock: SignedState | undefined;
    const { ch, ctx, sent } = await standaloneChannel({
      device,
      hub: hub.address,
      funding: { device: 10_000n, hub: 10_000n },
      onSend: (m, channel) => {
        // The hub refuses the device's give-back (an update without the lock), keeping the device's signature on it.
        if (m.t === 'update' && m.unlock)
          setTimeout(() =>
            channel.receive({
              t: 'reject',
              id: m.id,
              channelId: channel.channelId,
              code: 'INTERNAL',
              message: 'refused',
              latest: withLock!,
            } as never),
          );
      },
    });
    const expiry = BigInt(Math.floor(Date.now() / 1000) + 3600);
    const lock: Lock = { amount: 700n, hash: HASH, expiry, payer: 'hub' };
    const state: State = { ...ch.latest.state, version: 1n, ...lockCommitment([lock]) };
    const hubSig = hub.signDigest(stateDigest(ctx.separator, state));
    ch.receive({ t: 'update', id: 100, state, sig: hubSig, lock: { amount: 700n, hash: HASH, expiry } } as never);
    const ack = await until(() => sent.find((m) => m.t === 'ack' && m.id === 100));
    withLock = { state, deviceSig: signatureToHex((ack as { sig: Uint8Array }).sig), hubSig: signatureToHex(hubSig) };
    expect(ch.locks).toHaveLength(1);

    await expect(ch.giveBack(HASH)).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(ch.locks).toHaveLength(1); // the lock is still pending in the latest state both signed

    // Before the fix: the preimage was written to the record (the lock guard reveals what is there) and the claim,
    // with the preimage, sent to the hub.
    await expect(ch.claim(HASH, PREIMAGE)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(ch.record.preimages ?? []).toEqual([]);
    expect(sent.filter((m) => m.t === 'claim')).toEqual([]);
  });
});
