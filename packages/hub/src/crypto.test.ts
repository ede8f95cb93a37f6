import { afterAll, describe, expect, it } from 'vitest';
import { nativeSigner, nativeVerifier } from '@trickle/protocol/native';
import { nobleSigner } from '@trickle/protocol/signer';
import { keccak256, toAddress } from '@trickle/protocol/hex';
import { domainSeparator, stateDigest, trickleDomain, typedDataDigest } from '@trickle/protocol/eip712';
import type { ChannelId, State } from '@trickle/protocol/types';

// The digests a hub signs are Trickle typed-data digests (its signer signs nothing else).
const SEP = domainSeparator(trickleDomain(31337n, toAddress(`0x${'ab'.repeat(20)}`)));
const typed = (bytes: Uint8Array) => typedDataDigest(SEP, keccak256(bytes));
import { inlineCrypto, workerCrypto } from './crypto.js';

const key = `0x${'22'.repeat(32)}` as const;
const hub = nativeSigner(key);
const device = nobleSigner(`0x${'11'.repeat(32)}`);
const pool = workerCrypto({ privateKey: key, address: hub.address, threads: 2 });
const lone = workerCrypto({ privateKey: key, address: hub.address, threads: 1, inlineMax: 2 });
afterAll(async () => {
  await pool.close();
  await lone.close();
});

describe('hub crypto on worker threads', () => {
  it('signs only Trickle typed-data digests, on a worker as inline (INVALID_ARGUMENT for raw bytes)', async () => {
    const raw = keccak256(new Uint8Array([42]));
    const inline = inlineCrypto(hub, nativeVerifier());
    for (const c of [pool, lone, inline]) {
      await expect(c.sign(raw)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(c.verifyAndSign(raw, new Uint8Array(65), device.address)).rejects.toMatchObject({
        code: 'BAD_SIGNATURE',
      });
    }
    // Many at once go to the workers: each makes the digest again from its domain and struct hash before signing.
    const many = await Promise.allSettled(
      [raw, ...Array.from({ length: 8 }, (_, i) => typed(new Uint8Array([43, i])))].map((d) => pool.sign(d)),
    );
    expect(many[0]).toMatchObject({ status: 'rejected', reason: { code: 'INVALID_ARGUMENT' } });
    for (const r of many.slice(1)) expect(r.status).toBe('fulfilled');
  });
  it('gives byte-identical results to inline crypto, for many concurrent requests', async () => {
    const inline = inlineCrypto(hub, nativeVerifier());
    const digests = Array.from({ length: 200 }, (_, i) => typed(new Uint8Array([i, i >> 8])));
    const results = await Promise.all(digests.map((d) => pool.verifyAndSign(d, device.signDigest(d), device.address)));
    for (const [i, d] of digests.entries()) {
      expect(Buffer.from(results[i]!).toString('hex')).toBe(
        Buffer.from(await inline.verifyAndSign(d, device.signDigest(d), device.address)).toString('hex'),
      );
    }
    expect(await pool.recover(digests[0]!, device.signDigest(digests[0]!))).toBe(device.address);
  });
  it('refuses a signature by someone else, or malformed, with BAD_SIGNATURE', async () => {
    const d = typed(new Uint8Array([1]));
    await expect(pool.verifyAndSign(d, hub.signDigest(d), device.address)).rejects.toMatchObject({
      code: 'BAD_SIGNATURE',
    });
    await expect(pool.verifyAndSign(d, new Uint8Array(65), device.address)).rejects.toMatchObject({
      code: 'BAD_SIGNATURE',
    });
  });
  it('answers every job of a mixed batch (verify, recover, sign, refusals) in its own place', async () => {
    const inline = inlineCrypto(hub, nativeVerifier());
    const ds = Array.from({ length: 12 }, (_, i) => typed(new Uint8Array([7, i])));
    const settled = await Promise.allSettled(
      ds.map((d, i) =>
        i % 4 === 0
          ? pool.verifyAndSign(d, device.signDigest(d), device.address)
          : i % 4 === 1
            ? pool.recover(d, device.signDigest(d))
            : i % 4 === 2
              ? pool.sign(d)
              : pool.verifyAndSign(d, device.signDigest(d).slice(0, 64), device.address),
      ),
    );
    for (const [i, r] of settled.entries()) {
      const d = ds[i]!;
      if (i % 4 === 3) expect(r).toMatchObject({ status: 'rejected', reason: { code: 'BAD_SIGNATURE' } });
      else if (i % 4 === 1) expect(r).toEqual({ status: 'fulfilled', value: device.address });
      else
        expect(
          Buffer.from((r as PromiseFulfilledResult<Uint8Array>).value).equals(Buffer.from(await inline.sign(d))),
        ).toBe(true);
    }
  });
  it('a lone job while the workers are idle is answered on the calling thread, with the same bytes and refusals', async () => {
    const inline = inlineCrypto(hub, nativeVerifier());
    for (let i = 0; i < 20; i++) {
      const d = typed(new Uint8Array([9, i]));
      expect(
        Buffer.from(await lone.verifyAndSign(d, device.signDigest(d), device.address)).equals(
          Buffer.from(await inline.sign(d)),
        ),
      ).toBe(true);
    }
    const d = typed(new Uint8Array([10]));
    await expect(lone.verifyAndSign(d, hub.signDigest(d), device.address)).rejects.toMatchObject({
      code: 'BAD_SIGNATURE',
    });
    await expect(lone.verifyAndSign(d, new Uint8Array(65), device.address)).rejects.toMatchObject({
      code: 'BAD_SIGNATURE',
    });
    expect(await lone.recover(d, device.signDigest(d))).toBe(device.address);
  });
  it('digests a state off the calling thread: the same digest and countersignature as made here, refusals with their digest', async () => {
    const inline = inlineCrypto(hub, nativeVerifier());
    const domain = { separator: SEP, chainId: 31337n, adjudicator: toAddress(`0x${'ab'.repeat(20)}`) };
    const state = (i: number): State => ({
      channelId: `0x${'cd'.repeat(32)}` as ChannelId,
      version: BigInt(i + 1),
      paidByDevice: 10n ** 20n + BigInt(i),
      paidByHub: (1n << 255n) + BigInt(i),
      round: 3n,
      locksRoot: `0x${'ef'.repeat(32)}` as State['locksRoot'],
      lockedByDevice: BigInt(i),
      lockedByHub: 0n,
      isFinal: i % 2 === 1,
    });
    for (const c of [pool, lone]) {
      // many at once travel to the workers; one alone on the lone pool is answered on this thread
      const n = c === pool ? 40 : 1;
      const answers = await Promise.all(
        Array.from({ length: n }, (_, i) => {
          const d = stateDigest(SEP, state(i));
          const sig = i % 5 === 4 ? hub.signDigest(d) : device.signDigest(d);
          return c.verifyAndSignState!(state(i), sig, device.address, domain);
        }),
      );
      for (const [i, a] of answers.entries()) {
        const d = stateDigest(SEP, state(i));
        expect(Buffer.from(a.digest!).equals(Buffer.from(d))).toBe(true);
        if (i % 5 === 4) expect(a.error).toMatchObject({ code: 'BAD_SIGNATURE' });
        else expect(Buffer.from(a.sig!).equals(Buffer.from(await inline.sign(d)))).toBe(true);
      }
    }
    // a state that cannot be words is refused without a digest (the caller makes it and fails the same way), alone
    // (answered on the calling thread) and inside a batch for a worker, where the states around it are still signed
    const bad = { ...state(0), locksRoot: '0x12' as State['locksRoot'] };
    for (const c of [pool, lone]) {
      const a = await c.verifyAndSignState!(bad, new Uint8Array(65), device.address, domain);
      expect(a).toMatchObject({ digest: undefined, error: { code: 'INVALID_ARGUMENT' } });
    }
    const mixed = await Promise.all(
      Array.from({ length: 9 }, (_, i) => {
        const s = i === 4 ? bad : state(i);
        return pool.verifyAndSignState!(s, device.signDigest(stateDigest(SEP, state(i))), device.address, domain);
      }),
    );
    for (const [i, a] of mixed.entries()) {
      if (i === 4) {
        expect(a).toMatchObject({ digest: undefined, error: { code: 'INVALID_ARGUMENT' } });
        continue;
      }
      const d = stateDigest(SEP, state(i));
      expect(Buffer.from(a.digest!).equals(Buffer.from(d))).toBe(true);
      expect(Buffer.from(a.sig!).equals(Buffer.from(await inline.sign(d)))).toBe(true);
    }
  });
  it('jobs under different domains in one batch are each signed under their own (the worker keeps the last one)', async () => {
    const other = domainSeparator(trickleDomain(1n, toAddress(`0x${'cd'.repeat(20)}`)));
    const ds = Array.from({ length: 16 }, (_, i) =>
      typedDataDigest(i % 3 === 0 ? other : SEP, keccak256(new Uint8Array([77, i]))),
    );
    const sigs = await Promise.all(ds.map((d) => pool.sign(d)));
    const inline = inlineCrypto(hub, nativeVerifier());
    for (const [i, d] of ds.entries())
      expect(Buffer.from(sigs[i]!).equals(Buffer.from(await inline.sign(d)))).toBe(true);
  });

  it('close() lets the workers answer the batches they hold, then they exit by themselves; a job after is INTERNAL', async () => {
    // terminate() stopped a worker inside a libsecp256k1 call now and then, and the process aborted (SIGABRT): the
    // workers are now asked to stop after what they hold, so what was sent is signed, not failed.
    const c = workerCrypto({ privateKey: key, address: hub.address, threads: 2, inlineMax: 0 });
    const ds = Array.from({ length: 400 }, (_, i) => typed(new Uint8Array([i, i >> 8, 7])));
    const signed = ds.map((d) =>
      c.sign(d).then(
        (sig) => ({ sig }),
        (e: unknown) => ({ e }),
      ),
    );
    await new Promise((r) => setImmediate(r)); // the batches are sent
    await c.close();
    const inline = inlineCrypto(hub, nativeVerifier());
    for (const [i, d] of ds.entries()) {
      const r = await signed[i]!;
      expect(r).toHaveProperty('sig');
      expect(Buffer.from((r as { sig: Uint8Array }).sig).equals(Buffer.from(await inline.sign(d)))).toBe(true);
    }
    await expect(c.sign(ds[0]!)).rejects.toMatchObject({ code: 'INTERNAL' });
  });
});
