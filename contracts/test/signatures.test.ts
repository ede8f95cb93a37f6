import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { deployAdjudicator } from '@trickle/chain/deploy';
import { domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { fromHex, toHex } from '@trickle/protocol/hex';
import { SECP256K1_N, signatureToHex } from '@trickle/protocol/signer';
import type { SignatureHex, SignedState } from '@trickle/protocol/types';
import { compactSignature } from '@trickle/chain/actions/forceClose';
import { createFixture, decoded, ETH, expectRevert, ONE_ETH, type Fixture } from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

/** Every entry point that verifies signatures, on a channel in the right status for it. */
const entryPoints = {
  // A force close carries only the other party's signature (compact): sent once by the hub (the device's slot is
  // checked) and, if that passes, again by the device from the same chain state (the hub's slot is checked).
  forceClose: async (signed: SignedState) => {
    const snap = await fx.chain.snapshot();
    try {
      await decoded(
        fx.adj
          .connect(fx.hub)
          .contract.getFunction('forceClose')
          .send(signed.state, ...compactSignature(signed.deviceSig!))
          .then((t) => t.wait()),
      );
    } finally {
      await fx.chain.revert(snap);
    }
    return decoded(
      fx.adj
        .connect(fx.device)
        .contract.getFunction('forceClose')
        .send(signed.state, ...compactSignature(signed.hubSig!))
        .then((t) => t.wait()),
    );
  },
  cooperativeClose: async (signed: SignedState) =>
    fx.adj.connect(fx.relayer).cooperativeClose({ ...signed, state: { ...signed.state, isFinal: true } }),
  challenge: async (signed: SignedState) => {
    const { status } = await fx.adj.getChannel(signed.state.channelId);
    if (status === 'open') await fx.adj.connect(fx.hub).forceClose({ state: fx.state(signed.state.channelId) });
    return fx.adj.connect(fx.relayer).challenge(signed);
  },
};

function flipS(sig: SignatureHex): SignatureHex {
  const b = fromHex(sig, 65);
  const s = BigInt(toHex(b.subarray(32, 64)));
  const out = new Uint8Array(b);
  out.set(fromHex(`0x${(SECP256K1_N - s).toString(16).padStart(64, '0')}`, 32), 32);
  out[64] = b[64] === 27 ? 28 : 27;
  return signatureToHex(out);
}

describe('signature checks', () => {
  for (const [name, submit] of Object.entries(entryPoints)) {
    describe(name, () => {
      const make = async (fields = {}) => {
        const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
        const isFinal = name === 'cooperativeClose';
        return fx.state(id, { version: 4n, paidByDevice: 10n, isFinal, ...fields });
      };

      it('refuses a signature by the wrong key', async () => {
        const args = await expectRevert(submit(fx.sign(await make(), { device: fx.outsiderKey })), 'WrongSigner');
        expect(args).toMatchObject({ expected: fx.device.address, recovered: fx.outsider.address });
      });

      it('refuses the device signature in both slots', async () => {
        await expectRevert(submit(fx.sign(await make(), { hub: fx.deviceKey })), 'WrongSigner');
      });

      it('refuses signatures for another chain id', async () => {
        const sep = domainSeparator(trickleDomain(fx.chain.chainId + 1n, fx.adj.address));
        await expectRevert(submit(fx.sign(await make(), { sep })), 'WrongSigner');
      });

      it('refuses signatures for another adjudicator', async () => {
        const other = await deployAdjudicator(fx.deployer);
        const sep = domainSeparator(trickleDomain(fx.chain.chainId, other.address));
        await expectRevert(submit(fx.sign(await make(), { sep })), 'WrongSigner');
      });

      it('refuses signatures made for another channel', async () => {
        const state = await make();
        const { id: otherId } = await fx.open(ETH, ONE_ETH, ONE_ETH);
        const elsewhere = fx.sign({ ...state, channelId: otherId });
        await expectRevert(submit({ state, deviceSig: elsewhere.deviceSig, hubSig: elsewhere.hubSig }), 'WrongSigner');
      });

      it('refuses high-s signatures (s → n − s, v flipped), which ecrecover alone would accept', async () => {
        const signed = fx.sign(await make());
        if (name === 'forceClose') {
          // A high s has no compact (r, vs) form: its top bit is the v bit. The binding refuses it.
          expect(() => compactSignature(flipS(signed.deviceSig!))).toThrow(
            expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
          );
          return;
        }
        await expectRevert(submit({ ...signed, deviceSig: flipS(signed.deviceSig!) }), 'ECDSAInvalidSignatureS');
        await expectRevert(submit({ ...signed, hubSig: flipS(signed.hubSig!) }), 'ECDSAInvalidSignatureS');
      });

      it('refuses a bad v, a zero r (recovery to the zero address) and a wrong length', async () => {
        const signed = fx.sign(await make());
        const b = fromHex(signed.deviceSig!, 65);
        if (name === 'forceClose') {
          // The compact form has no v byte and no length: the binding refuses those before sending.
          const badV = new Uint8Array(b);
          badV[64] = 29;
          expect(() => compactSignature(signatureToHex(badV))).toThrow(
            expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
          );
          expect(() => compactSignature(signatureToHex(b.subarray(0, 64)))).toThrow(
            expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
          );
          const zeroR = new Uint8Array(b);
          zeroR.fill(0, 0, 32);
          await expectRevert(submit({ ...signed, deviceSig: signatureToHex(zeroR) }), 'ECDSAInvalidSignature');
          return;
        }
        const badV = new Uint8Array(b);
        badV[64] = 29;
        await expectRevert(submit({ ...signed, deviceSig: signatureToHex(badV) }), 'ECDSAInvalidSignature');
        const zeroR = new Uint8Array(b);
        zeroR.fill(0, 0, 32);
        await expectRevert(submit({ ...signed, deviceSig: signatureToHex(zeroR) }), 'ECDSAInvalidSignature');
        await expectRevert(
          submit({ ...signed, hubSig: signatureToHex(b.subarray(0, 64)) }),
          'ECDSAInvalidSignatureLength',
        );
      });

      it('accepts the correctly signed state (control)', async () => {
        await submit(fx.sign(await make()));
      });
    });
  }
});
