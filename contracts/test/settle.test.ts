import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Address } from '@trickle/protocol/types';
import {
  CHALLENGE,
  createFixture,
  deltas,
  ETH,
  expectRevert,
  makeLock,
  ONE_ETH,
  USDT,
  withLocks,
  type Fixture,
  type TestLock,
} from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

describe('settle', () => {
  for (const [label, tokenOf, unit] of [
    ['ETH', () => ETH, ONE_ETH],
    ['USDT-like', () => fx.usdt.address, USDT],
  ] as const) {
    it(`pays ${label} out exactly as the registered state says, after the deadline; anyone may call`, async () => {
      const token: Address = tokenOf();
      const { id } = await fx.open(token, 6n * unit, 3n * unit);
      await fx.adj
        .connect(fx.hub)
        .forceClose(fx.sign(fx.state(id, { version: 3n, paidByDevice: 5n * unit, paidByHub: unit })));
      await fx.chain.increaseTime(CHALLENGE);
      const [d, h, a] = await deltas(fx, token, [fx.device.address, fx.hub.address, fx.adj.address], async () => {
        const r = await fx.adj.connect(fx.relayer).settle(id);
        expect(r.closed).toMatchObject({ channelId: id, version: 3n, devicePayout: 2n * unit, hubPayout: 7n * unit });
      });
      expect([d, h, a]).toEqual([2n * unit, 7n * unit, -9n * unit]);
      expect(await fx.adj.getChannel(id)).toMatchObject({
        status: 'closed',
        depositDevice: 0n,
        depositHub: 0n,
        version: 0n,
      });
    });

    it(`force close → challenge → settle pays the challenged ${label} state`, async () => {
      const token: Address = tokenOf();
      const { id } = await fx.open(token, 6n * unit, 3n * unit);
      await fx.adj.connect(fx.hub).forceClose(fx.sign(fx.state(id, { version: 3n, paidByDevice: 5n * unit })));
      await fx.adj
        .connect(fx.device)
        .challenge(fx.sign(fx.state(id, { version: 4n, paidByDevice: 5n * unit, paidByHub: 4n * unit })));
      await fx.chain.increaseTime(CHALLENGE);
      const [d, h] = await deltas(fx, token, [fx.device.address, fx.hub.address], () =>
        fx.adj.connect(fx.relayer).settle(id),
      );
      expect([d, h]).toEqual([5n * unit, 4n * unit]);
    });
  }

  it('settles the zero state from the deposits', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 2n * ONE_ETH);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    await fx.chain.increaseTime(CHALLENGE);
    const [d, h] = await deltas(fx, ETH, [fx.device.address, fx.hub.address], () =>
      fx.adj.connect(fx.relayer).settle(id),
    );
    expect([d, h]).toEqual([ONE_ETH, 2n * ONE_ETH]);
  });

  it('is refused one second before the deadline and accepted at it', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    const { forceClosed } = await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    const deadline = forceClosed.deadline;
    const snap = await fx.chain.snapshot();
    await fx.chain.setNextBlockTimestamp(deadline - 1n);
    const args = await expectRevert(
      fx.adj.connect(fx.relayer).settle(id, { gasLimit: 500_000n }),
      'ChallengePeriodNotOver',
    );
    expect(args['deadline']).toBe(deadline);
    expect(await fx.chain.latestTimestamp()).toBe(deadline - 1n);
    await fx.chain.revert(snap);

    await fx.chain.setNextBlockTimestamp(deadline);
    await fx.adj.connect(fx.relayer).settle(id, { gasLimit: 500_000n });
    expect(await fx.chain.latestTimestamp()).toBe(deadline);
  });

  it('is refused twice (double settle), and on an open or unknown channel', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    expect((await expectRevert(fx.adj.connect(fx.relayer).settle(id), 'ChannelNotClosing'))['status']).toBe(1n);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    await fx.chain.increaseTime(CHALLENGE);
    await fx.adj.connect(fx.relayer).settle(id);
    expect((await expectRevert(fx.adj.connect(fx.relayer).settle(id), 'ChannelNotClosing'))['status']).toBe(3n);
    expect(
      (await expectRevert(fx.adj.connect(fx.relayer).settle(`0x${'11'.repeat(32)}` as never), 'ChannelNotClosing'))[
        'status'
      ],
    ).toBe(0n);
  });

  it('never lets a settled channel id be reopened', async () => {
    const { id, params } = await fx.open(ETH, ONE_ETH, 0n);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    await fx.chain.increaseTime(CHALLENGE);
    await fx.adj.connect(fx.relayer).settle(id);
    await expectRevert(fx.adj.connect(fx.device).open(params, ONE_ETH), 'ChannelExists');
    await expectRevert(fx.adj.connect(fx.hub).open(params, 0n), 'ChannelExists');
  });

  it('refuses to push with too little gas left, so a caller cannot divert payouts into owed', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    await fx.chain.increaseTime(CHALLENGE);
    await expectRevert(fx.adj.connect(fx.relayer).settle(id, { gasLimit: 90_000n }), 'GasTooLow');
    expect(await fx.adj.owed(ETH, fx.device.address as Address)).toBe(0n);
    await fx.adj.connect(fx.relayer).settle(id);
  });
});

describe('settle with locks', () => {
  const U = ONE_ETH;
  /** Device 10, hub 10; a state where the device paid 2, the hub 1, and `locks` are pending. Force-closed by the device. */
  async function forceClosedWith(locks: readonly TestLock[]) {
    const { id } = await fx.open(ETH, 10n * U, 10n * U);
    const state = withLocks(fx.state(id, { version: 3n, paidByDevice: 2n * U, paidByHub: U }), locks);
    const r = await fx.adj.connect(fx.device).forceClose(fx.sign(state), { locks: locks.map((l) => l.lock) });
    return { id, deadline: r.forceClosed.deadline, list: locks.map((l) => l.lock) };
  }

  it('pays a lock revealed at its expiry to the payee, and one revealed a second late back to the payer', async () => {
    const now = await fx.chain.latestTimestamp();
    const toHub = makeLock(3n * U, 'device', now + 100n, 1); // device pays the hub
    const toDevice = makeLock(4n * U, 'hub', now + 200n, 2); // hub pays the device
    const { id, deadline, list } = await forceClosedWith([toHub, toDevice]);
    expect((await fx.adj.getChannel(id)).registration).toMatchObject({ payoutDevice: 6n * U, payoutHub: 7n * U });
    await fx.chain.setNextBlockTimestamp(toHub.lock.expiry);
    expect((await fx.adj.connect(fx.hub).reveal(toHub.preimage)).revealedAt).toBe(toHub.lock.expiry);
    await fx.chain.setNextBlockTimestamp(toDevice.lock.expiry + 1n);
    expect((await fx.adj.connect(fx.device).reveal(toDevice.preimage)).revealedAt).toBe(toDevice.lock.expiry + 1n);
    await fx.chain.setNextBlockTimestamp(deadline);
    const [d, h] = await deltas(fx, ETH, [fx.device.address, fx.hub.address], async () => {
      const r = await fx.adj.connect(fx.relayer).settle(id, { locks: list });
      expect(r.closed).toMatchObject({ devicePayout: 6n * U, hubPayout: 14n * U });
    });
    expect([d, h]).toEqual([6n * U, 14n * U]);
    expect(await fx.balance(ETH, fx.adj.address)).toBe(0n);
  });

  it('waits while a lock is undecided: refused at its expiry, an unrevealed lock returns to its payer a second later', async () => {
    const now = await fx.chain.latestTimestamp();
    const pending = makeLock(4n * U, 'hub', now + CHALLENGE + 50n, 3);
    const { id, list } = await forceClosedWith([pending]);
    const snap = await fx.chain.snapshot();
    await fx.chain.setNextBlockTimestamp(pending.lock.expiry);
    const args = await expectRevert(
      fx.adj.connect(fx.relayer).settle(id, { locks: list, gasLimit: 500_000n }),
      'LockNotExpired',
    );
    expect(args).toMatchObject({ hash: pending.lock.hash, expiry: pending.lock.expiry });
    await fx.chain.revert(snap);
    await fx.chain.setNextBlockTimestamp(pending.lock.expiry + 1n);
    const r = await fx.adj.connect(fx.relayer).settle(id, { locks: list, gasLimit: 500_000n });
    expect(r.closed).toMatchObject({ devicePayout: 9n * U, hubPayout: 11n * U });
  });

  it('a lock revealed before the force close, and one revealed during the challenge period, both pay their payee', async () => {
    const now = await fx.chain.latestTimestamp();
    const early = makeLock(U, 'device', now + 5000n, 4);
    const during = makeLock(2n * U, 'hub', now + 5000n, 5);
    await fx.adj.connect(fx.hub).reveal(early.preimage);
    const { id, list } = await forceClosedWith([early, during]);
    await fx.adj.connect(fx.device).reveal(during.preimage);
    await fx.chain.increaseTime(CHALLENGE);
    const r = await fx.adj.connect(fx.relayer).settle(id, { locks: list });
    // pre-lock: device 10 + 1 − 2 − 1 = 8, hub 10 + 2 − 1 − 2 = 9; then +1 to the hub, +2 to the device
    expect(r.closed).toMatchObject({ devicePayout: 10n * U, hubPayout: 10n * U });
  });

  it('one preimage decides the locks on its hash in every channel, each by its own expiry (a route A → hub → B)', async () => {
    const now = await fx.chain.latestTimestamp();
    // Upstream the device (A) locks toward the hub until now + 300; downstream the hub locks toward the device (B)
    // until now + 200 and another downstream lock until now + 100. The preimage comes out at now + 150.
    const up = makeLock(3n * U, 'device', now + 300n, 7);
    const down = { lock: { ...up.lock, payer: 'hub' as const, expiry: now + 200n }, preimage: up.preimage };
    const late = { lock: { ...up.lock, payer: 'hub' as const, expiry: now + 100n }, preimage: up.preimage };
    const a = await forceClosedWith([up]);
    const b = await forceClosedWith([down]);
    const c = await forceClosedWith([late]);
    await fx.chain.setNextBlockTimestamp(now + 150n);
    await fx.adj.connect(fx.outsider).reveal(up.preimage);
    await fx.chain.setNextBlockTimestamp(now + 301n + CHALLENGE);
    const settle = async (x: typeof a) => (await fx.adj.connect(fx.relayer).settle(x.id, { locks: x.list })).closed;
    // pre-lock: device 10 − 2 + 1 = 9 (− 3 locked when it pays the lock), hub 10 + 2 − 1 = 11 (− 3 when it pays)
    expect(await settle(a)).toMatchObject({ devicePayout: 6n * U, hubPayout: 14n * U }); // claimed: to the hub
    expect(await settle(b)).toMatchObject({ devicePayout: 12n * U, hubPayout: 8n * U }); // claimed: to the device
    expect(await settle(c)).toMatchObject({ devicePayout: 9n * U, hubPayout: 11n * U }); // revealed late: back to the hub
  });

  it('a channel with MAX_LOCKS pending locks can always be closed: force close, a challenge with another full list and the settle each fit far inside a block', async () => {
    const max = Number((await fx.adj.contract.getFunction('MAX_LOCKS').staticCall()) as bigint);
    const { id } = await fx.open(ETH, 100n * U, 100n * U);
    const now = await fx.chain.latestTimestamp();
    // Half paid by each side (makeLock seeds stay below 256); the newer list is the one settled, every lock revealed.
    const list = (seed: number) =>
      Array.from({ length: max }, (_, i) => makeLock(U, i % 2 === 0 ? 'device' : 'hub', now + 5000n, seed + i));
    const older = list(1);
    const newer = list(101);
    const closed = await fx.adj
      .connect(fx.hub)
      .forceClose(fx.sign(withLocks(fx.state(id, { version: 1n }), older)), { locks: older.map((l) => l.lock) });
    const challenged = await fx.adj
      .connect(fx.device)
      .challenge(fx.sign(withLocks(fx.state(id, { version: 2n }), newer)), { locks: newer.map((l) => l.lock) });
    for (const l of newer) await fx.adj.connect(fx.relayer).reveal(l.preimage);
    await fx.chain.increaseTime(CHALLENGE);
    const settled = await fx.adj.connect(fx.relayer).settle(id, { locks: newer.map((l) => l.lock) });
    // Every lock went to its payee: each side paid max/2 locks and received max/2.
    expect(settled.closed).toMatchObject({ devicePayout: 100n * U, hubPayout: 100n * U });
    expect(await fx.balance(ETH, fx.adj.address)).toBe(0n);
    // Measured with 64 locks: force close ~193k, challenge ~201k, settle ~283k (GAS.md: ~5k per lock at settle).
    // 1M is a thirtieth of a 30M block: a close stays minable even on a congested chain.
    for (const r of [closed, challenged, settled]) expect(r.gasUsed).toBeLessThan(1_000_000n);
  });

  it('refuses a lock list other than the registered one (missing, reordered, altered)', async () => {
    const now = await fx.chain.latestTimestamp();
    const a = makeLock(U, 'device', now + 10n, 6);
    const b = makeLock(U, 'hub', now + 10n, 7);
    const { id, list } = await forceClosedWith([a, b]);
    await fx.chain.increaseTime(CHALLENGE);
    for (const wrong of [[], [a.lock], [b.lock, a.lock], [{ ...a.lock, amount: 2n * U }, b.lock], [...list, a.lock]]) {
      await expectRevert(fx.adj.connect(fx.relayer).settle(id, { locks: wrong, gasLimit: 500_000n }), 'WrongLocks');
    }
    await fx.adj.connect(fx.relayer).settle(id, { locks: list });
  });

  it('refuses a registration other than the registered one', async () => {
    const { id } = await forceClosedWith([]);
    await fx.chain.increaseTime(CHALLENGE);
    const reg = (await fx.adj.getChannel(id)).registration!;
    const raw = fx.adj.connect(fx.relayer).contract.getFunction('settle');
    for (const wrong of [
      { ...reg, payoutDevice: reg.payoutDevice + 1n },
      { ...reg, hub: fx.outsider.address },
      { ...reg, deadline: reg.deadline - 1n },
    ]) {
      await expectRevert(decodedSend(raw, [id, wrong]), 'WrongRegistration');
    }
  });
});

async function decodedSend(fn: ReturnType<typeof fx.adj.contract.getFunction>, args: unknown[]): Promise<unknown> {
  const { decodeChainError } = await import('@trickle/chain/errors');
  try {
    return await (await fn.send(...args, { gasLimit: 500_000n })).wait();
  } catch (e) {
    throw decodeChainError(e);
  }
}
