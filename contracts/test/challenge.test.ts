import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  CHALLENGE,
  createFixture,
  deltas,
  ETH,
  expectRevert,
  makeLock,
  ONE_ETH,
  withLocks,
  type Fixture,
} from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

async function forceClosed(version = 5n) {
  const { id } = await fx.open(ETH, 10n * ONE_ETH, 10n * ONE_ETH);
  const r = await fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(id, { version, paidByHub: ONE_ETH })));
  return { id, deadline: r.forceClosed.deadline };
}

describe('challenge', () => {
  it('replaces the registered state with a newer one without moving the deadline; anyone may submit', async () => {
    const { id, deadline } = await forceClosed();
    const newer = fx.state(id, { version: 8n, paidByDevice: 3n * ONE_ETH, paidByHub: ONE_ETH });
    const r = await fx.adj.connect(fx.relayer).challenge(fx.sign(newer));
    expect(r.challenged).toMatchObject({ channelId: id, version: 8n, deadline });
    expect(await fx.adj.getChannel(id)).toMatchObject({
      status: 'closing',
      version: 8n,
      deadline,
      payoutDevice: 8n * ONE_ETH,
      payoutHub: 12n * ONE_ETH,
    });
  });

  it('supersedes the zero state, and may be repeated with ever newer versions', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    await fx.adj.connect(fx.hub).forceClose({ state: fx.state(id) });
    await fx.adj.connect(fx.device).challenge(fx.sign(fx.state(id, { version: 1n, paidByHub: 1n })));
    await fx.adj.connect(fx.device).challenge(fx.sign(fx.state(id, { version: 2n, paidByHub: 2n })));
    expect((await fx.adj.getChannel(id)).version).toBe(2n);
  });

  it('refuses an equal or older version', async () => {
    const { id } = await forceClosed(5n);
    let args = await expectRevert(
      fx.adj.connect(fx.hub).challenge(fx.sign(fx.state(id, { version: 5n }))),
      'StaleVersion',
    );
    expect(args).toMatchObject({ registered: 5n, given: 5n });
    args = await expectRevert(fx.adj.connect(fx.hub).challenge(fx.sign(fx.state(id, { version: 4n }))), 'StaleVersion');
    expect(args).toMatchObject({ registered: 5n, given: 4n });
  });

  it('is accepted one second before the deadline and refused at it', async () => {
    const { id, deadline } = await forceClosed();
    const snap = await fx.chain.snapshot();
    await fx.chain.setNextBlockTimestamp(deadline - 1n);
    await fx.adj.connect(fx.hub).challenge(fx.sign(fx.state(id, { version: 6n })));
    expect(await fx.chain.latestTimestamp()).toBe(deadline - 1n);
    await fx.chain.revert(snap);

    // Exactly at the deadline: a fixed gas limit skips estimation, so the transaction itself runs in that block.
    await fx.chain.setNextBlockTimestamp(deadline);
    const args = await expectRevert(
      fx.adj.connect(fx.hub).challenge(fx.sign(fx.state(id, { version: 6n })), { gasLimit: 500_000n }),
      'ChallengePeriodOver',
    );
    expect(args['deadline']).toBe(deadline);
    expect(await fx.chain.latestTimestamp()).toBe(deadline);
  });

  it('is refused after the deadline, with time travel', async () => {
    const { id } = await forceClosed();
    await fx.chain.increaseTime(CHALLENGE + 10n);
    await expectRevert(fx.adj.connect(fx.hub).challenge(fx.sign(fx.state(id, { version: 6n }))), 'ChallengePeriodOver');
  });

  it('is refused on an open or a closed channel', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    expect(
      (
        await expectRevert(
          fx.adj.connect(fx.hub).challenge(fx.sign(fx.state(id, { version: 1n }))),
          'ChannelNotClosing',
        )
      )['status'],
    ).toBe(1n);
    await fx.adj.connect(fx.hub).cooperativeClose(fx.sign(fx.state(id, { version: 1n, isFinal: true })));
    expect(
      (
        await expectRevert(
          fx.adj.connect(fx.hub).challenge(fx.sign(fx.state(id, { version: 2n }))),
          'ChannelNotClosing',
        )
      )['status'],
    ).toBe(3n);
  });

  it('refuses a newer state that is not signed by both, or exceeds the deposits', async () => {
    const { id } = await forceClosed();
    await expectRevert(
      fx.adj.connect(fx.hub).challenge(fx.sign(fx.state(id, { version: 9n }), { device: fx.hubKey })),
      'WrongSigner',
    );
    await expectRevert(
      fx.adj.connect(fx.hub).challenge(fx.sign(fx.state(id, { version: 9n, paidByDevice: 10n * ONE_ETH + 1n }))),
      'StateExceedsDeposits',
    );
  });

  it('decides the payout: force close, challenge, settle pays the challenged state exactly', async () => {
    const { id } = await forceClosed();
    await fx.adj
      .connect(fx.hub)
      .challenge(fx.sign(fx.state(id, { version: 7n, paidByDevice: 4n * ONE_ETH, paidByHub: ONE_ETH })));
    await fx.chain.increaseTime(CHALLENGE);
    const [d, h] = await deltas(fx, ETH, [fx.device.address, fx.hub.address], () =>
      fx.adj.connect(fx.relayer).settle(id),
    );
    expect([d, h]).toEqual([7n * ONE_ETH, 13n * ONE_ETH]);
  });
});

describe('challenge with locks', () => {
  it("replaces the registered locks with the newer state's; settle then takes the new list", async () => {
    const { id } = await fx.open(ETH, 10n * ONE_ETH, 10n * ONE_ETH);
    const later = (await fx.chain.latestTimestamp()) + 10n * CHALLENGE;
    const old = makeLock(2n * ONE_ETH, 'device', later, 1);
    const fresh = makeLock(3n * ONE_ETH, 'hub', later, 2);
    await fx.adj
      .connect(fx.hub)
      .forceClose(fx.sign(withLocks(fx.state(id, { version: 1n }), [old])), { locks: [old.lock] });
    const newer = withLocks(fx.state(id, { version: 2n, paidByDevice: 2n * ONE_ETH }), [fresh]); // the old lock was claimed
    await expectRevert(fx.adj.connect(fx.relayer).challenge(fx.sign(newer), { locks: [old.lock] }), 'WrongLocks');
    const r = await fx.adj.connect(fx.relayer).challenge(fx.sign(newer), { locks: [fresh.lock] });
    expect(r.registration).toMatchObject({
      version: 2n,
      locksRoot: newer.locksRoot,
      payoutDevice: 8n * ONE_ETH,
      payoutHub: 9n * ONE_ETH,
    });
    await fx.adj.connect(fx.device).reveal(fresh.preimage);
    await fx.chain.setNextBlockTimestamp(later + 1n); // the old lock, never revealed, has expired too
    await expectRevert(fx.adj.connect(fx.relayer).settle(id, { locks: [old.lock] }), 'WrongLocks');
    const s = await fx.adj.connect(fx.relayer).settle(id, { locks: [fresh.lock] });
    expect(s.closed).toMatchObject({ devicePayout: 11n * ONE_ETH, hubPayout: 9n * ONE_ETH });
  });

  it('is accepted one second before the deadline and refused at it, with locks pending', async () => {
    const { id } = await fx.open(ETH, 10n * ONE_ETH, 10n * ONE_ETH);
    const l = makeLock(ONE_ETH, 'device', 10_000n, 3);
    const { forceClosed } = await fx.adj
      .connect(fx.hub)
      .forceClose(fx.sign(withLocks(fx.state(id, { version: 1n }), [l])), { locks: [l.lock] });
    const newer = fx.sign(withLocks(fx.state(id, { version: 2n, paidByHub: 1n }), [l]));
    const snap = await fx.chain.snapshot();
    await fx.chain.setNextBlockTimestamp(forceClosed.deadline);
    await expectRevert(
      fx.adj.connect(fx.relayer).challenge(newer, { locks: [l.lock], gasLimit: 500_000n }),
      'ChallengePeriodOver',
    );
    await fx.chain.revert(snap);
    await fx.chain.setNextBlockTimestamp(forceClosed.deadline - 1n);
    const r = await fx.adj.connect(fx.relayer).challenge(newer, { locks: [l.lock], gasLimit: 500_000n });
    expect(r.challenged.version).toBe(2n);
  });
});
