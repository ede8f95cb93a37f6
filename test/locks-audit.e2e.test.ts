import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPreimage } from '@trickle/protocol/locks';
import type { Bytes32 } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { leaveRunning, waitFor } from './helpers/wait.js';

/** Audit of conditional routes (protocol-spec §5, routed conditional transfers). */
const CHALLENGE = 2n;
const newKey = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;

describe('conditional routes: audit', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
  });
  afterAll(async () => w?.close());

  it('a payee channel full of pending locks refuses a new conditional route up front (TOO_MANY_LOCKS): nothing is locked on the payer’s channel', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-full'), limits: { lockMarginSeconds: 1, maxLocks: 2 } });
    const payer = await w.client(2);
    const griefer = await w.client(4);
    const payee = await w.client(3);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    const gch = await griefer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    await w.hubDeposit(bch.channelId, 1_000_000n);
    // The griefer fills the payee's channel with the hub's locks (1 unit each, never claimed).
    for (let i = 0; i < 2; i++) {
      const h = gch.pay(1n, { to: payee.address, lock: { hash: hashPreimage(newKey()), expiresIn: 600 } });
      await h.locked;
      leaveRunning(h.result, 'never claimed');
    }
    await waitFor(() => (hub.channels.get(bch.channelId)!.locks ?? []).length === 2 && bch.locks.length === 2);
    // The buyer's lock could never be forwarded: it is refused before anything is locked on its channel.
    const h = ach.pay(700n, { to: payee.address, lock: { hash: hashPreimage(newKey()), expiresIn: 600 } });
    await expect(h.locked).rejects.toMatchObject({ code: 'TOO_MANY_LOCKS' });
    await expect(h.result).rejects.toMatchObject({ code: 'TOO_MANY_LOCKS' });
    expect(ach.locks).toEqual([]);
    expect(hub.channels.get(ach.channelId)!.latest.state).toMatchObject({ lockedByDevice: 0n, paidByDevice: 0n });
    await hub.close();
    w.hub = undefined;
  });
});
