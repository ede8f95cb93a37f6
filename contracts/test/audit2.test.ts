/**
 * Audit of the adjudicator against protocol-spec §2 / §8 and contracts/README.md: cases the other files do not pin.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { compactSignature } from '@trickle/chain/actions/forceClose';
import type { Lock } from '@trickle/protocol/locks';
import {
  CHALLENGE,
  createFixture,
  decoded,
  deltas,
  ETH,
  expectRevert,
  makeLock,
  ONE_ETH,
  USDT,
  withLocks,
  type Fixture,
} from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

const ZERO_WORD = `0x${'00'.repeat(32)}`;

/** A lock list as the ABI tuples `IAdjudicator.Lock` (payer 0 = device, 1 = hub). */
const locksArg = (locks: readonly Lock[]) => locks.map((l) => ({ ...l, payer: l.payer === 'hub' ? 1 : 0 }));

async function registrationOf(id: string) {
  const reg = (await fx.adj.getChannel(id as never)).registration;
  expect(reg).toBeDefined();
  return reg!;
}

describe('settleMany races', () => {
  it('skips a channel not yet due whose registration a challenge replaced after the batch was built', async () => {
    const due = await fx.open(fx.usdt.address, 10n * USDT, 10n * USDT);
    await fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(due.id, { version: 1n, paidByDevice: USDT })));
    await fx.chain.increaseTime(CHALLENGE);
    const notDue = await fx.open(fx.usdt.address, 10n * USDT, 10n * USDT);
    await fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(notDue.id, { version: 1n, paidByHub: USDT })));
    // The hub builds its batch from what it read...
    const entries = [
      { channelId: due.id, reg: await registrationOf(due.id), locks: [] },
      { channelId: notDue.id, reg: await registrationOf(notDue.id), locks: [] },
    ];
    // ...and the device's challenge of the channel not yet due lands first (a race, not a caller bug).
    await fx.adj.connect(fx.device).challenge(fx.sign(fx.state(notDue.id, { version: 2n, paidByHub: 2n * USDT })));
    const [d, h] = await deltas(fx, fx.usdt.address, [fx.device.address, fx.hub.address], () =>
      decoded(
        fx.adj
          .connect(fx.hub)
          .contract.getFunction('settleMany')
          .send(entries, { gasLimit: 2_000_000n }) // EDR cannot estimate capped-gas pushes
          .then((t) => t.wait()),
      ),
    );
    expect([d, h]).toEqual([9n * USDT, 11n * USDT]);
    expect((await fx.adj.getChannel(due.id)).status).toBe('closed');
    expect(await fx.adj.getChannel(notDue.id)).toMatchObject({ status: 'closing', version: 2n });
  });

  it('still reverts on a wrong registration for a channel that is due (a caller bug)', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    await fx.chain.increaseTime(CHALLENGE);
    const reg = { ...(await registrationOf(id)), payoutDevice: 2n * ONE_ETH, payoutHub: 0n };
    await expectRevert(
      decoded(
        fx.adj
          .connect(fx.hub)
          .contract.getFunction('settleMany')
          .send([{ channelId: id, reg, locks: [] }])
          .then((t) => t.wait()),
      ),
      'WrongRegistration',
    );
  });
});

describe('adjudicator edge cases (spec §2 and §8)', () => {
  it('forceClose refuses the caller’s own signature in the compact slot, and r = vs = 0 on a non-zero state', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    const signed = fx.sign(fx.state(id, { version: 3n, paidByDevice: 1n }));
    const raw = fx.adj.connect(fx.device).contract.getFunction('forceClose');
    const own = await expectRevert(
      decoded(raw.send(signed.state, ...compactSignature(signed.deviceSig!)).then((t) => t.wait())),
      'WrongSigner',
    );
    expect(own).toMatchObject({ expected: fx.hub.address, recovered: fx.device.address });
    await expectRevert(
      decoded(raw.send(signed.state, ZERO_WORD, ZERO_WORD).then((t) => t.wait())),
      'ECDSAInvalidSignature',
    );
  });

  it('challengeWithLocks refuses a list not matching the commitment; settle refuses the list the challenge replaced', async () => {
    const { id } = await fx.open(ETH, 10n * ONE_ETH, 10n * ONE_ETH);
    const now = await fx.chain.latestTimestamp();
    const a = makeLock(ONE_ETH, 'device', now + 100n, 1);
    const b = makeLock(2n * ONE_ETH, 'hub', now + 100n, 2);
    const first = withLocks(fx.state(id, { version: 2n }), [a]);
    await fx.adj.connect(fx.device).forceClose(fx.sign(first), { locks: [a.lock] });
    const newer = withLocks(fx.state(id, { version: 3n }), [a, b]);
    await expectRevert(fx.adj.connect(fx.hub).challenge(fx.sign(newer), { locks: [b.lock, a.lock] }), 'WrongLocks');
    await expectRevert(fx.adj.connect(fx.hub).challenge(fx.sign(newer), { locks: [a.lock] }), 'WrongLocks');
    await fx.adj.connect(fx.hub).challenge(fx.sign(newer), { locks: [a.lock, b.lock] });
    await fx.chain.increaseTime(CHALLENGE);
    const reg = await registrationOf(id);
    const raw = fx.adj.connect(fx.relayer).contract.getFunction('settleWithLocks');
    await expectRevert(decoded(raw.send(id, reg, locksArg([a.lock])).then((t) => t.wait())), 'WrongLocks');
    // Unrevealed and expired: each lock returns to its payer.
    const [d, h] = await deltas(fx, ETH, [fx.device.address, fx.hub.address], () =>
      decoded(raw.send(id, reg, locksArg([a.lock, b.lock]), { gasLimit: 2_000_000n }).then((t) => t.wait())),
    );
    expect([d, h]).toEqual([10n * ONE_ETH, 10n * ONE_ETH]);
  });

  it('a preimage revealed after the expiry (but before the settle) returns the lock to its payer', async () => {
    const { id } = await fx.open(fx.usdt.address, 10n * USDT, 10n * USDT);
    const now = await fx.chain.latestTimestamp();
    const l = makeLock(3n * USDT, 'hub', now + 50n, 7);
    const state = withLocks(fx.state(id, { version: 1n }), [l]);
    await fx.adj.connect(fx.hub).forceClose(fx.sign(state), { locks: [l.lock] });
    await fx.chain.increaseTime(100n);
    await fx.adj.connect(fx.device).reveal(l.preimage);
    await fx.chain.increaseTime(CHALLENGE);
    const [d, h] = await deltas(fx, fx.usdt.address, [fx.device.address, fx.hub.address], () =>
      fx.adj.connect(fx.relayer).settle(id, { locks: [l.lock] }),
    );
    expect([d, h]).toEqual([10n * USDT, 10n * USDT]);
  });

  it('refuses a top-up after a cooperative close and after a settle', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    await fx.adj.connect(fx.relayer).cooperativeClose(fx.sign(fx.state(id, { version: 1n, isFinal: true })));
    await expectRevert(fx.adj.connect(fx.device).deposit(id, ONE_ETH, { token: ETH }), 'ChannelNotOpen');
    const other = await fx.open(ETH, ONE_ETH, 0n);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(other.id) });
    await fx.chain.increaseTime(CHALLENGE);
    await fx.adj.connect(fx.relayer).settle(other.id);
    await expectRevert(fx.adj.connect(fx.hub).deposit(other.id, ONE_ETH, { token: ETH }), 'ChannelNotOpen');
  });
});
