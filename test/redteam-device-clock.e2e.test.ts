import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { hashPreimage } from '@trickle/protocol/locks';
import type { Bytes32 } from '@trickle/protocol/types';
import type { ConditionalPayment } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/**
 * A device clock minutes off and conditional payments (the client README's paragraph on it): lock expiries are chain
 * time read on the device's clock, so a device clock ahead refuses its own claim of a lock it takes for expired —
 * typed, nothing stored or sent — and claims it once its clock is right again. Real hub and chain; only the payee's
 * claim runs with the clock shifted (the hub shares this process).
 */
describe('red team: a device clock ahead and a lock toward it', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub({ limits: { lockMarginSeconds: 1 } });
  }, 60_000);
  afterAll(async () => w?.close());

  it('15 minutes ahead, a lock with 10 minutes left: LOCK_EXPIRED, nothing stored or sent; with the clock right again it is claimed and paid', async () => {
    const payer = await w.client(2);
    const payee = await w.client(3);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    await w.hubDeposit(bch.channelId, 1_000_000n);
    const key = `0x${randomBytes(32).toString('hex')}` as Bytes32;
    let offered: ConditionalPayment | undefined;
    bch.onConditionalPayment((p) => (offered = p));
    const handle = ach.pay(700n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 600 } });
    await handle.locked;
    await waitFor(() => offered !== undefined);
    const left = Number(offered!.expiresAt) - Math.floor(Date.now() / 1000);
    expect(left > 60 && left <= 600).toBe(true);
    const before = bch.record;

    const real = Date.now.bind(Date);
    const skewed = vi.spyOn(Date, 'now').mockImplementation(() => real() + 15 * 60_000);
    try {
      await expect(offered!.claim(key)).rejects.toMatchObject({ code: 'LOCK_EXPIRED' });
    } finally {
      skewed.mockRestore();
    }
    expect(bch.record.preimages ?? []).toEqual(before.preimages ?? []); // not stored, so not revealed either
    expect(bch.latest).toEqual(before.latest);
    expect(bch.locks.map((l) => l.hash)).toEqual([hashPreimage(key)]);

    await offered!.claim(key);
    await expect(handle).resolves.toEqual({ status: 'claimed', preimage: key });
    await waitFor(() => bch.latest.state.paidByHub === 700n);
  });
});
