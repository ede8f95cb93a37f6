// Data for payment: a key (preimage) already revealed is worthless as a condition. A payer that locks money on the
// hash of a key it has already seen revealed (a retry of a purchase, a resold offer) pays for what anybody who saw
// the key can claim.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPreimage } from '@trickle/protocol/locks';
import type { Bytes32 } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';

const newKey = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;

describe('data for payment: a revealed key replayed', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub({ limits: { lockMarginSeconds: 1 } });
  });
  afterAll(async () => w?.close());

  it('a second lock on the hash of a key already claimed is refused before anything is locked', async () => {
    const payer = await w.client(2);
    const payee = await w.client(3);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    await w.hubDeposit(bch.channelId, 1_000_000n);
    // The payee sells keys: it claims each lock with the key of its hash; every claim must succeed.
    const keys = new Map<Bytes32, Bytes32>();
    const claimErrors: unknown[] = [];
    bch.onConditionalPayment((p) => {
      const k = keys.get(p.hash);
      if (!k) claimErrors.push(new Error(`no key for ${p.hash}`));
      else p.claim(k).catch((e: unknown) => claimErrors.push(e));
    });
    const key = newKey();
    keys.set(hashPreimage(key), key);
    const first = ach.pay(700n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 60 } });
    await expect(first).resolves.toEqual({ status: 'claimed', preimage: key });
    const before = { ...ach.latest.state };
    const hubBefore = { ...w.hub!.channels.get(ach.channelId)!.latest.state };
    // The buyer retries the purchase (or is offered the same hash again): the key is public, the lock no condition.
    const again = ach.pay(700n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 60 } });
    await expect(again.locked).rejects.toMatchObject({ code: 'PREIMAGE_KNOWN' });
    await expect(again.result).rejects.toMatchObject({ code: 'PREIMAGE_KNOWN' });
    expect(ach.latest.state).toEqual(before);
    expect(ach.locks).toEqual([]);
    expect(w.hub!.channels.get(ach.channelId)!.latest.state).toEqual(hubBefore);
    // A fresh key still buys.
    const key2 = newKey();
    keys.set(hashPreimage(key2), key2);
    const third = ach.pay(300n, { to: payee.address, lock: { hash: hashPreimage(key2), expiresIn: 60 } });
    await expect(third).resolves.toEqual({ status: 'claimed', preimage: key2 });
    expect(ach.latest.state.paidByDevice).toBe(before.paidByDevice + 300n);
    expect(claimErrors).toEqual([]);
  });
});
